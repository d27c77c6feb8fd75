"""This control plane's id: made once, kept in the store, the same for every server on it.

Cloud providers tag what they launch with it and list or terminate only instances that
carry it (providers/aws.py), so two control planes sharing a cloud account (staging and
prod) never take each other's instances for strays.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.server.store.tables import ClusterSetting

CLUSTER_ID = "cluster_id"


def stored_cluster_id(session: Session) -> str | None:
    """The id if one was made; None before the first `cluster_id` (any session)."""
    return session.scalars(
        select(ClusterSetting.value).where(ClusterSetting.key == CLUSTER_ID)
    ).first()


def cluster_id(session: Session) -> str:
    """The id, made now if this store has none yet (a write session).

    Two servers making it at once: the primary key takes one insert and refuses the other,
    whose savepoint is rolled back and which then reads the winner's (on PostgreSQL the
    refused insert waited for the winner to commit, so the read sees it; SQLite writers
    take turns, so there is no race there).
    """
    found = stored_cluster_id(session)
    if found is not None:
        return found
    made = uuid.uuid4().hex
    try:
        with session.begin_nested():
            session.add(ClusterSetting(key=CLUSTER_ID, value=made))
    except IntegrityError:  # another server made it a moment ago: its id is the one
        found = stored_cluster_id(session)
        assert found is not None  # nothing deletes it
        return found
    return made
