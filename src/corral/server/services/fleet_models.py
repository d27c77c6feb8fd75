"""The GPU models this fleet has ever had, and the warnings a submission gets from them.

Nodes are never deleted from the store (a lost or cordoned node keeps its row), so the
nodes table holds every model the fleet has had, except a model a node reported before it
registered again with other GPUs. The set only grows, so each engine keeps what it has
seen: a request that matches a model seen before costs no query, and only one that does
not (a typo, or a model that just joined) reads the nodes again. Several API servers each
keep their own; a miss always rereads the store, so none of them is ever wrong for long.
"""

from __future__ import annotations

import threading
import weakref

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from corral.core.scheduler.gpu_models import matches, never_had
from corral.server.store.tables import Node
from corral.spec.resources import Resources

_seen: weakref.WeakKeyDictionary[Engine, frozenset[str]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def fleet_models(session: Session) -> frozenset[str]:
    """Every GPU model a node of this store has reported, read now."""
    models = {
        str(g["model"])
        for gpus in session.scalars(select(Node.gpus))
        for g in gpus or ()
        if g.get("model")
    }
    engine = _engine(session)
    with _lock:
        known = _seen[engine] = _seen.get(engine, frozenset()) | models
    return known


def resource_warnings(session: Session, resources: Resources) -> list[str]:
    """What a submitter should hear about its resources now: a GPU model no node of the
    fleet has ever had."""
    want = resources.gpus.type if resources.gpus.count > 0 else None
    if want is None:
        return []
    seen = _seen.get(_engine(session), frozenset())
    if any(matches(want, m) for m in seen):
        return []
    warning = never_had(want, fleet_models(session))
    return [] if warning is None else [warning]


def _engine(session: Session) -> Engine:
    bind = session.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine
