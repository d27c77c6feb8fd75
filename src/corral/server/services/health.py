"""Nodes' health in the store: a report comes in, core.health judges it, and the store says
what follows.

```
 HealthReport ─► new Xids stored as events (de-duplicated: a report repeats the boot's Xids)
      │          history = Xids since an operator last marked the node repaired
      ▼
 core.health.assess(report, inventory, history, clock skew) ─► Assessment
      │
      ▼ written: nodes.health (the judgement), nodes.health_signals (the report),
      │          each GPU's `healthy` (the scheduler places nothing on a sick one),
      │          the condition (core.node_condition: unhealthy while it takes no work)
      ▼ reaction, for the work on what turned sick:
        training jobs: decided again now (core.recovery: gpu_xid / node_unhealthy, from the
                       checkpoint, not charged to max_restarts)
        endpoint replicas: the endpoint controller replaces them, new one ready first
      ▼ events: each change of health, and what corral did, with the workloads affected
```

An operator's `set-healthy` is a claim checked by the next full report: the node comes back
only if its checks pass with the history before the claim closed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core import health as core
from corral.core.lifecycle import ACTIVE_REPLICA_STATES
from corral.core.node_condition import condition_of
from corral.core.states import JobState, NodeCondition
from corral.server.services.effects import Effects
from corral.server.services.settling import settle_job
from corral.server.store.tables import HealthEvent, Job, Node, Replica, Workspace
from corral.wire.health import HealthReport

log = logging.getLogger("corral.server.health")

HISTORY_MAX = 500  # Xids read back for escalation: a flapping GPU must not make this unbounded
EVENT_TEXT_MAX = 2000


def record_health(session: Session, node_id: str, report: HealthReport, now: float) -> Effects:
    """Store a node's health report and act on what changed."""
    node = session.get(Node, node_id)
    if node is None:
        return Effects()
    boot = report.boot_id or None
    _store_xids(session, node, report, now)
    skew = report.sent_at - now
    claim = node.repair_claim_at if report.full else None
    since = claim if claim is not None and claim <= now else node.repaired_at
    assessment = core.assess(
        core.HealthFacts(
            report=report,
            inventory=_inventory(node),
            history=_history(session, node.id, since),
            clock_skew_s=skew,
        )
    )
    before = _assessment(node)
    if claim is not None and claim <= now:
        _settle_claim(session, node, assessment, claim, now)
        if node.repair_claim_at is not None:  # refused: judge with the history as it was
            assessment = core.assess(
                core.HealthFacts(
                    report=report,
                    inventory=_inventory(node),
                    history=_history(session, node.id, node.repaired_at),
                    clock_skew_s=skew,
                )
            )
            node.repair_claim_at = None
    node.health = assessment.to_json()
    node.health_signals = report.model_dump(mode="json", exclude={"gpus": {"__all__": {"xids"}}})
    node.health_at = now
    node.boot_id = boot
    return _react(session, node, before, assessment, now)


def _inventory(node: Node) -> tuple[tuple[int, str], ...]:
    return tuple((int(g["index"]), str(g["uuid"])) for g in node.gpus)


def _assessment(node: Node) -> core.Assessment | None:
    if not node.health:
        return None
    try:
        return core.Assessment.from_json(node.health)
    except (KeyError, TypeError, ValueError):  # written by another version: judge afresh
        return None


EventKey = tuple[str, str | None, int | None, float]


def _key(kind: str, uuid: str | None, code: int | None, node_at: float | None) -> EventKey:
    """An event as the node saw it: the same in every report of its boot."""
    return (kind, uuid, code, round(node_at or 0.0, 3))


def _store_xids(session: Session, node: Node, report: HealthReport, now: float) -> None:
    """Xid and SXid events not stored yet. A report carries every Xid of the boot so far,
    so what is new is what no stored event of this boot matches."""
    if not report.node.sxids and not any(gpu.xids for gpu in report.gpus):
        return  # most reports: nothing to store, no need to read what is stored
    boot = report.boot_id or None
    known = {
        _key(*row)
        for row in session.execute(
            select(HealthEvent.kind, HealthEvent.gpu_uuid, HealthEvent.code, HealthEvent.node_at)
            .where(
                HealthEvent.node_id == node.id,
                HealthEvent.kind.in_(("xid", "sxid")),
                HealthEvent.boot_id == boot if boot is not None else HealthEvent.boot_id.is_(None),
            )
            .order_by(HealthEvent.id.desc())
            .limit(HISTORY_MAX * 4)
        )
    }
    new: list[HealthEvent] = []
    for gpu in report.gpus:
        for xid in gpu.xids:
            key = _key("xid", gpu.uuid, xid.code, xid.at)
            if key in known:
                continue
            known.add(key)
            rule = core.xid_rule(xid.code)
            meaning = rule.meaning if rule is not None else "not in corral's Xid table"
            detail = f" ({xid.detail})" if xid.detail else ""
            text = f"GPU {gpu.index}: Xid {xid.code}, {meaning}{detail}"
            new.append(
                HealthEvent(
                    kind="xid",
                    gpu_index=gpu.index,
                    gpu_uuid=gpu.uuid,
                    code=xid.code,
                    subcode=xid.subcode,
                    node_at=xid.at,
                    text=_clip(text),
                )
            )
    for sxid in report.node.sxids:
        key = _key("sxid", None, sxid.code, sxid.at)
        if key in known:
            continue
        known.add(key)
        text = f"NVSwitch SXid {sxid.code}: {sxid.detail}"
        new.append(HealthEvent(kind="sxid", code=sxid.code, node_at=sxid.at, text=_clip(text)))
    for row in new:
        row.node_id, row.at, row.boot_id, row.workloads = node.id, now, boot, []
        session.add(row)
    session.flush()


def _history(session: Session, node_id: str, since: float | None) -> tuple[core.XidSeen, ...]:
    query = select(
        HealthEvent.gpu_uuid,
        HealthEvent.code,
        HealthEvent.boot_id,
        HealthEvent.at,
        HealthEvent.subcode,
    ).where(HealthEvent.node_id == node_id, HealthEvent.kind == "xid")
    if since is not None:
        query = query.where(HealthEvent.at > since)
    rows = session.execute(query.order_by(HealthEvent.id.desc()).limit(HISTORY_MAX)).all()
    return tuple(
        core.XidSeen(gpu_uuid=uuid or "", code=code or 0, boot_id=boot or "", at=at, subcode=sub)
        for uuid, code, boot, at, sub in reversed(rows)
    )


def _settle_claim(
    session: Session, node: Node, assessment: core.Assessment, claim: float, now: float
) -> None:
    """An operator said the node is repaired: the checks run after that decide."""
    if assessment.takes_work and not assessment.needs_operator:
        node.repaired_at = claim
        node.repair_claim_at = None
        event(session, node, now, "operator", "marked repaired; the checks pass", assessment.health)
        log.warning("node %s marked repaired: its checks pass", node.name)
    else:
        event(
            session,
            node,
            now,
            "operator",
            f"set-healthy refused: the checks still fail: {assessment.summary}",
            assessment.health,
        )


def _react(
    session: Session,
    node: Node,
    before: core.Assessment | None,
    after: core.Assessment,
    now: float,
) -> Effects:
    effects = Effects()
    was = {g.index: g for g in before.gpus} if before is not None else {}
    gpus = _flagged(node.gpus, after)
    sick = {
        int(old["index"])
        for old, new in zip(node.gpus, gpus, strict=True)
        if old.get("healthy", True) and not new["healthy"]
    }
    if gpus != node.gpus:
        node.gpus = gpus
        effects.wake_scheduler = True  # a GPU back in service may be what a job waits for
    for judged in after.gpus:
        old = was.get(judged.index)
        if old is None and judged.health in (core.Health.HEALTHY, core.Health.UNKNOWN):
            continue
        if old is not None and (old.health, old.repair) == (judged.health, judged.repair):
            continue
        sentences = [f.sentence for f in judged.findings] or [
            f"GPU {judged.index}: {judged.health}"
        ]
        event(session, node, now, "health", "; ".join(sentences), judged.health, gpu=judged)
    condition = condition_of(
        lost=node.condition == NodeCondition.LOST,
        takes_work=after.takes_work,
        cordoned=cordoned(node),
    )
    out = condition == NodeCondition.UNHEALTHY and node.condition != NodeCondition.UNHEALTHY
    back = node.condition == NodeCondition.UNHEALTHY and condition != NodeCondition.UNHEALTHY
    if node.condition == NodeCondition.CORDONED and node.cordon_reason is None and out:
        node.cordon_reason = "cordoned before its checks failed"
    node.condition = condition
    if not (out or back or sick):
        return effects
    effects.sync_nodes.add(node.id)
    effects.wake_scheduler = True
    affected = _affected(session, node, sick, whole_node=out)
    names = workload_names(session, affected)
    if out:
        action = f"cordoned by corral: {after.summary}; it takes no new work" + (
            "" if after.needs_operator else " until its checks pass"
        )
        event(session, node, now, "action", action, after.health, workloads=names)
        log.warning("node %s unhealthy: %s", node.name, after.summary)
    if back:
        event(session, node, now, "action", "back in service: its checks pass", after.health)
        log.warning("node %s back in service: its checks pass", node.name)
    if sick and not out:
        gpus_text = ", ".join(str(i) for i in sorted(sick))
        event(
            session,
            node,
            now,
            "action",
            f"GPU {gpus_text} taken out of scheduling",
            after.health,
            workloads=names,
        )
    for job in affected:
        effects.merge(_move_work(session, job, now))
    return effects


def _affected(session: Session, node: Node, sick: set[int], *, whole_node: bool) -> list[Job]:
    """The jobs with a live replica on the node's sick GPUs (all of its replicas when the
    node is taken out), in id order."""
    replicas = session.scalars(
        select(Replica).where(Replica.node_id == node.id, Replica.state.in_(ACTIVE_REPLICA_STATES))
    ).all()
    hit = {r.job_id for r in replicas if whole_node or sick.intersection(r.gpus)}
    if not hit:
        return []
    return list(session.scalars(select(Job).where(Job.id.in_(hit)).order_by(Job.id)))


def _move_work(session: Session, job: Job, now: float) -> Effects:
    """A job with a replica on hardware that turned sick. A training job is decided again
    now (core.recovery ends the attempt: gpu_xid or node_unhealthy); an endpoint's replica
    is the endpoint controller's to replace, new one first."""
    if job.endpoint_id is not None:
        return Effects(wake_endpoints=True)
    if job.state not in (JobState.STARTING, JobState.RUNNING):
        return Effects()
    job.recheck_at = now
    return settle_job(session, job, now)


def event(
    session: Session,
    node: Node,
    now: float,
    kind: str,
    text: str,
    health: str | None = None,
    *,
    gpu: core.GpuHealth | None = None,
    workloads: Sequence[str] = (),
) -> None:
    session.add(
        HealthEvent(
            node_id=node.id,
            at=now,
            kind=kind,
            gpu_index=gpu.index if gpu is not None else None,
            gpu_uuid=gpu.uuid if gpu is not None else None,
            boot_id=node.boot_id,
            health=str(health) if health is not None else None,
            text=_clip(text),
            workloads=list(workloads)[:100],
        )
    )


def workload_names(session: Session, jobs: Sequence[Job]) -> list[str]:
    """workspace/job for each job: events keep them so, and show each workspace its own."""
    ids = {job.workspace_id for job in jobs}
    spaces = dict(
        session.execute(select(Workspace.id, Workspace.name).where(Workspace.id.in_(ids))).all()
    )
    return sorted(f"{spaces.get(job.workspace_id, '?')}/{job.name}" for job in jobs)


def gpu_judgements(node: Node) -> dict[int, tuple[str, str, str | None]]:
    """GPU index -> (health, repair, the worst finding's sentence), as last judged."""
    judged: dict[int, tuple[str, str, str | None]] = {}
    for g in (node.health or {}).get("gpus", []):
        try:
            sentences = g.get("sentences") or []
            judged[int(g["index"])] = (
                str(g["health"]),
                str(g["repair"]),
                str(sentences[0]) if sentences else None,
            )
        except (KeyError, TypeError, ValueError):
            continue
    return judged


def events_of(session: Session, node_id: str, limit: int = 50) -> list[HealthEvent]:
    """The node's latest health events, newest first."""
    return list(
        session.scalars(
            select(HealthEvent)
            .where(HealthEvent.node_id == node_id)
            .order_by(HealthEvent.id.desc())
            .limit(limit)
        )
    )


def _clip(text: str) -> str:
    return text if len(text) <= EVENT_TEXT_MAX else text[: EVENT_TEXT_MAX - 1] + "…"


def keep_judgement(node: Node) -> None:
    """After a hello replaced the node's inventory (every GPU `healthy`): the last
    judgement still holds until the next report, and a lost node coming back takes work
    only if its checks allowed it."""
    judged = _assessment(node)
    if judged is not None:
        node.gpus = _flagged(node.gpus, judged)
    node.condition = condition_of(
        lost=False,
        takes_work=judged is None or judged.takes_work,
        cordoned=cordoned(node),
    )


def cordoned(node: Node) -> bool:
    """Someone (an operator, or recovery) keeps the node from new work: it is cordoned,
    or its reason is kept while it is unhealthy or lost."""
    return node.cordon_reason is not None or node.condition == NodeCondition.CORDONED


def _flagged(gpus: list[dict[str, Any]], judged: core.Assessment) -> list[dict[str, Any]]:
    """The node's GPUs with `healthy` as judged: the scheduler places only on those."""
    flags = {g.index: g.schedulable for g in judged.gpus}
    return [{**g, "healthy": flags.get(int(g["index"]), True)} for g in gpus]
