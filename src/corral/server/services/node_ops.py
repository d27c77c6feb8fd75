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


def _node(session: Session, caller: Principal, name: str, verb: str) -> Node:
    if not caller.cluster_admin:
        raise Forbidden(f"only a cluster admin can {verb} a node")
    node = session.scalars(select(Node).where(Node.name == name)).first()
    if node is None:
        raise NotFound.of(f"node '{name}'")
    return node


def cordon(session: Session, caller: Principal, name: str) -> tuple[Node, bool]:
    """The node takes nothing new; True when that is a change."""
    node = _node(session, caller, name, "cordon")
    if node.condition is NodeCondition.CORDONED:
        return node, False
    if node.condition is not NodeCondition.READY:
        raise Conflict(
            f"node '{name}' is {node.condition}: it takes no work as it is; cordon it "
            "once it is ready again"
        )
    node.condition = NodeCondition.CORDONED
    log.warning("node %s cordoned by %s", name, caller.token_name)
    return node, True


def uncordon(session: Session, caller: Principal, name: str) -> tuple[Node, bool]:
    """The node takes work again; True when that is a change."""
    node = _node(session, caller, name, "uncordon")
    if node.condition is NodeCondition.READY:
        return node, False
    if node.condition is not NodeCondition.CORDONED:
        raise Conflict(
            f"node '{name}' is {node.condition}, not cordoned: it comes back by itself "
            "when its agent reconnects"
        )
    node.condition = NodeCondition.READY
    log.warning("node %s uncordoned by %s", name, caller.token_name)
    return node, True
