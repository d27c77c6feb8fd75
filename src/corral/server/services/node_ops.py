"""What an operator does to a node: cordon it (it keeps what runs there and takes nothing
new) and uncordon it. corral cordons a node by itself when its hardware is suspect
(core.recovery); only an operator gives it back."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core.states import NodeCondition
from corral.server.auth import Principal
from corral.server.errors import Conflict, Forbidden, NotFound
from corral.server.store.tables import Node

log = logging.getLogger("corral.server.nodes")


def _move(
    session: Session,
    caller: Principal,
    name: str,
    verb: str,
    source: NodeCondition,
    target: NodeCondition,
    refused: str,
) -> tuple[Node, bool]:
    """The node from `source` to `target`; True when that is a change. Any other
    condition is a Conflict that says why (`refused`)."""
    if not caller.cluster_admin:
        raise Forbidden(f"only a cluster admin can {verb} a node")
    node = session.scalars(select(Node).where(Node.name == name)).first()
    if node is None:
        raise NotFound.of(f"node '{name}'")
    if node.condition is target:
        return node, False
    if node.condition is not source:
        raise Conflict(f"node '{name}' is {node.condition}{refused}")
    node.condition = target
    log.warning("node %s %sed by %s", name, verb, caller.token_name)
    return node, True


def cordon(session: Session, caller: Principal, name: str) -> tuple[Node, bool]:
    """The node takes nothing new; True when that is a change."""
    refused = ": it takes no work as it is; cordon it once it is ready again"
    return _move(
        session, caller, name, "cordon", NodeCondition.READY, NodeCondition.CORDONED, refused
    )


def uncordon(session: Session, caller: Principal, name: str) -> tuple[Node, bool]:
    """The node takes work again; True when that is a change."""
    refused = ", not cordoned: it comes back by itself when its agent reconnects"
    return _move(
        session, caller, name, "uncordon", NodeCondition.CORDONED, NodeCondition.READY, refused
    )
