"""State columns read back as core.states members and refuse what is no state."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import StatementError

from corral.core.states import NodeCondition
from corral.server.store.db import Store
from corral.server.store.tables import Node
from support.store import register_node


def test_a_state_reads_back_as_its_member(store: Store) -> None:
    register_node(store, "a")
    with store.read() as session:
        condition = session.scalar(select(Node.condition))
    assert condition is NodeCondition.READY


def test_a_misspelt_state_is_refused_not_stored(store: Store) -> None:
    node_id = register_node(store, "a")
    refused = pytest.raises(StatementError, match="'redy' is not a NodeCondition")
    with refused, store.transaction() as session:
        node = session.get(Node, node_id)
        assert node is not None
        node.condition = "redy"  # type: ignore[assignment]
    with store.read() as session:
        assert session.scalar(select(Node.condition)) is NodeCondition.READY
