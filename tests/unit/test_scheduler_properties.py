"""Invariants of a round, on random fleets, running jobs, quotas and queues (Hypothesis).

- no node is over-committed (GPUs: healthy, existing, never twice; CPUs, memory, disk);
- a gang is all-or-nothing, of one GPU class, within the domain it may span;
- every pending job is decided exactly once; never-fits are pending;
- quota: a non-preemptible job beyond its guarantee takes only GPUs no guarantee needs
  (what the guarantees can get at once, a max flow, never shrinks for it), and one refused
  for its quota could not have been placed so; all borrowing is preemptible;
- preemption: only preemptible victims, never of higher priority (equal only to reclaim
  borrowed GPUs), and only for a job the same plan places;
- backfill: nothing placed after the reservation uses its nodes unless it ends first;
- the plan does not depend on input order, nor on a Scheduler's kept index.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.core.placement import (
    Demand,
    GpuSlot,
    NodeState,
    PendingJob,
    PlacementPlan,
    ReplicaPlacement,
    RunningJob,
    Snapshot,
    place,
)
from corral.core.scheduler import Level, Reclaim, Round, Scheduler, SchedulerConfig

MODELS = {"H100": 81_920, "A100": 40_960}
TOPOLOGIES = [
    (),
    ("p1", "r1", "z1", "ra"),
    ("p1", "r1", "z1", "rb"),
    ("p1", "r1", "z2", "rc"),
    ("p1", "r2", "z3", "rd"),
    ("p2", "r3", "z4", ""),
]
WORKSPACES = ["a", "b", "c"]
LEVELS = {level.word: level for level in Level}
NOW = 100.0


@st.composite
def nodes(draw: st.DrawFn) -> list[NodeState]:
    out = []
    for i in range(draw(st.integers(0, 8))):
        gpus = draw(st.sampled_from([0, 2, 4, 8, 8, 8]))
        model = draw(st.sampled_from(["H100", "H100", "A100"]))
        bad = draw(st.sampled_from([set(), set(), set(), {0}, {3, 5}]))
        topo = draw(st.sampled_from(TOPOLOGIES))
        out.append(
            NodeState(
                id=f"n{i}",
                name=f"n{i}",
                gpus=tuple(GpuSlot(g, model, MODELS[model], g not in bad) for g in range(gpus)),
                cpus=draw(st.sampled_from([2.0, 16.0, 64.0, 64.0])),
                memory_mb=draw(st.sampled_from([8_000, 256_000, 256_000])),
                disk_mb=draw(st.sampled_from([0, 100_000, 100_000])),
                topology=(*topo, f"n{i}") if topo else (),
                labels=draw(st.sampled_from([{}, {}, {"pool": "x"}])),
            )
        )
    return out


def _demand(draw: st.DrawFn, gpus: int) -> Demand:
    return Demand(
        gpus=gpus,
        gpu_type=draw(st.sampled_from([None, None, "H100", "H100", "a100"])),
        gpu_min_memory_mb=draw(st.sampled_from([None] * 5 + [50_000])),
        cpus=draw(st.sampled_from([0.0, 0.5, 1.0, 1.0, 4.0])),
        memory_mb=draw(st.sampled_from([0, 1_000, 1_000, 16_000])),
        disk_mb=draw(st.sampled_from([0, 0, 0, 50_000])),
    )


@st.composite
def running_jobs(draw: st.DrawFn, fleet: list[NodeState]) -> list[RunningJob]:
    """Jobs already holding resources, allotted first-fit so the fleet stays consistent."""
    free = {n.id: [g.index for g in n.gpus if g.healthy] for n in fleet}
    cpu = {n.id: n.cpus for n in fleet}
    out: list[RunningJob] = []
    for i in range(draw(st.integers(0, 10))):
        replicas, gpus = draw(st.integers(1, 2)), draw(st.sampled_from([1, 2, 4, 4, 8]))
        d = replace(_demand(draw, gpus), gpu_type=None, memory_mb=0, disk_mb=0)
        placed = []
        for n in fleet:
            while len(placed) < replicas and len(free[n.id]) >= gpus and cpu[n.id] >= d.cpus:
                taken, free[n.id] = free[n.id][:gpus], free[n.id][gpus:]
                cpu[n.id] -= d.cpus
                placed.append(ReplicaPlacement(len(placed), n.id, tuple(taken)))
        if len(placed) < replicas:
            continue  # did not fit: what it took is simply not given back (held by others)
        start = draw(st.floats(0, NOW))
        out.append(
            RunningJob(
                id=f"r{i}",
                workspace=draw(st.sampled_from(WORKSPACES)),
                priority=draw(st.integers(0, 3)),
                preemptible=draw(st.sampled_from([True, True, False])),
                demand=d,
                replicas=tuple(placed),
                started_at=start,
                last_checkpoint_at=draw(st.sampled_from([None, start, NOW - 1])),
                expected_end=draw(st.sampled_from([None, NOW + 10, NOW + 500, NOW - 5])),
            )
        )
    return out


@st.composite
def pending_jobs(draw: st.DrawFn) -> list[PendingJob]:
    out = []
    for i in range(draw(st.integers(0, 10))):
        out.append(
            PendingJob(
                id=f"j{i}",
                replicas=draw(st.sampled_from([1, 1, 1, 2, 3])),
                demand=_demand(draw, draw(st.sampled_from([0, 1, 2, 4, 4, 8, 8]))),
                priority=draw(st.integers(0, 3)),
                submitted_at=float(draw(st.integers(0, 5))),
                workspace=draw(st.sampled_from(WORKSPACES)),
                preemptible=draw(st.booleans()),
                topology=draw(st.sampled_from([None, None, "node", "rack", "zone", "any"])),
                node_selector=draw(st.sampled_from([{}, {}, {}, {"pool": "x"}])),
                max_runtime_s=draw(st.sampled_from([None, 5.0, 50.0, 1000.0])),
            )
        )
    return out


@st.composite
def worlds(draw: st.DrawFn) -> tuple[Snapshot, SchedulerConfig]:
    fleet = draw(nodes())
    run = draw(running_jobs(fleet))
    used: dict[str, list[tuple[tuple[int, ...], Demand]]] = {n.id: [] for n in fleet}
    for r in run:
        for rep in r.replicas:
            used[rep.node_id].append((rep.gpus, r.demand))
    fleet = [
        replace(
            n,
            used_gpus=frozenset(g for gpus, _ in used[n.id] for g in gpus),
            used_cpus=sum(d.cpus for _, d in used[n.id]),
            used_memory_mb=sum(d.memory_mb for _, d in used[n.id]),
        )
        for n in fleet
    ]
    quota = st.dictionaries(
        st.sampled_from(["H100", "*", "A100"]), st.sampled_from([0, 4, 8, 16]), max_size=2
    )
    quotas = draw(
        st.one_of(st.just({}), st.dictionaries(st.sampled_from(WORKSPACES), quota, min_size=1))
    )
    config = SchedulerConfig(
        reclaim=draw(st.sampled_from(list(Reclaim))),
        backfill=draw(st.booleans()),
        fair_share=draw(st.booleans()),
        max_spread=draw(st.sampled_from([Level.REGION, Level.ZONE])),
    )
    return Snapshot(tuple(fleet), tuple(draw(pending_jobs())), tuple(run), quotas), config


@st.composite
def contended_worlds(draw: st.DrawFn) -> tuple[Snapshot, SchedulerConfig]:
    """A full fleet of 8-GPU racks: borrowers of workspace b hold most of it, and owners of
    workspace a (with a guarantee) queue gangs: reclaim and multi-node preemption."""
    fleet = [
        NodeState(
            id=f"n{i}",
            name=f"n{i}",
            gpus=tuple(GpuSlot(g, "H100", 81_920) for g in range(8)),
            cpus=64.0,
            memory_mb=256_000,
            disk_mb=0,
            topology=("p1", "r1", "z1", f"rack{i // 2}", f"n{i}"),
        )
        for i in range(draw(st.integers(2, 6)))
    ]
    run: list[RunningJob] = []
    used: dict[str, set[int]] = {n.id: set() for n in fleet}
    for n in fleet:
        start = 0
        while start < 8:
            size = draw(st.sampled_from([1, 2, 4, 8]))
            if start + size > 8 or draw(st.integers(0, 5)) == 0:
                break
            gpus = tuple(range(start, start + size))
            used[n.id] |= set(gpus)
            run.append(
                RunningJob(
                    id=f"r{len(run)}",
                    workspace=draw(st.sampled_from(["a", "b", "b", "b"])),
                    priority=draw(st.integers(0, 2)),
                    preemptible=draw(st.sampled_from([True, True, False])),
                    demand=Demand(size, None, None, 1.0, 0, 0),
                    replicas=(ReplicaPlacement(0, n.id, gpus),),
                    started_at=0.0,
                    last_checkpoint_at=draw(st.sampled_from([None, 50.0])),
                    expected_end=draw(st.sampled_from([None, NOW + 100])),
                )
            )
            start += size
    fleet = [
        replace(
            n,
            used_gpus=frozenset(used[n.id]),
            used_cpus=float(sum(1 for r in run if r.replicas[0].node_id == n.id)),
        )
        for n in fleet
    ]
    pending = [
        PendingJob(
            id=f"j{i}",
            replicas=draw(st.sampled_from([1, 2, 3])),
            demand=Demand(draw(st.sampled_from([2, 4, 8])), "H100", None, 1.0, 0, 0),
            priority=draw(st.integers(0, 3)),
            submitted_at=float(i),
            workspace=draw(st.sampled_from(["a", "a", "b"])),
            preemptible=draw(st.booleans()),
            topology=draw(st.sampled_from([None, "rack"])),
            max_runtime_s=draw(st.sampled_from([None, 50.0])),
        )
        for i in range(draw(st.integers(1, 5)))
    ]
    quotas = {"a": {"H100": draw(st.sampled_from([8, 16, 32]))}}
    config = SchedulerConfig(reclaim=draw(st.sampled_from(list(Reclaim))))
    return Snapshot(tuple(fleet), tuple(pending), tuple(run), quotas), config


# -- the invariants ---------------------------------------------------------------------


def _domain(node: NodeState, level: Level) -> tuple[str, ...]:
    provider, region, zone, rack = (*node.topology[:4], "", "", "", "")[:4]
    return {
        Level.NODE: (node.id,),
        Level.RACK: (provider, region, zone, rack) if rack else ("node", node.id),
        Level.ZONE: (provider, region, zone),
        Level.REGION: (provider, region),
        Level.PROVIDER: (provider,),
        Level.ANY: (),
    }[level]


def _bucket(quotas: dict[str, dict[str, int]], ws: str, model: str) -> str | None:
    keys = quotas.get(ws, {})
    named = sorted(k for k in keys if k != "*" and k.upper() in model.upper())
    return named[0] if named else ("*" if "*" in keys else None)


def check(snapshot: Snapshot, plan: PlacementPlan, config: SchedulerConfig) -> None:
    nodes = {n.id: n for n in snapshot.nodes}
    pending = {j.id: j for j in snapshot.pending}
    running = {r.id: r for r in snapshot.running}
    placed = {g.job_id: g for g in plan.placements}

    # Every pending job decided exactly once.
    assert len(placed) == len(plan.placements)
    assert placed.keys().isdisjoint(plan.pending_reasons)
    assert placed.keys() | plan.pending_reasons.keys() == pending.keys()
    assert plan.never_fits.keys() <= plan.pending_reasons.keys()

    # Preemption: preemptible, lower priority (equal only to reclaim), for a placed job.
    victims = [p.job_id for p in plan.preemptions]
    assert len(victims) == len(set(victims))
    for p in plan.preemptions:
        v, j = running[p.job_id], pending[p.for_job_id]
        assert p.for_job_id in placed
        assert v.preemptible
        assert v.priority <= j.priority
        if v.priority == j.priority:
            assert snapshot.quotas and v.workspace != j.workspace
            assert config.reclaim == Reclaim.LOWER_OR_EQUAL_PRIORITY

    # Capacity after the plan: the snapshot's use, less the victims, plus the placements.
    gpus = {n.id: set(n.used_gpus) for n in snapshot.nodes}
    cpus = {n.id: n.used_cpus for n in snapshot.nodes}
    memory = {n.id: n.used_memory_mb for n in snapshot.nodes}
    disk = {n.id: n.used_disk_mb for n in snapshot.nodes}
    for vid in victims:
        v = running[vid]
        for rep in v.replicas:
            gpus[rep.node_id] -= set(rep.gpus)
            cpus[rep.node_id] -= v.demand.cpus
            memory[rep.node_id] -= v.demand.memory_mb
    for g in plan.placements:
        j, d = pending[g.job_id], pending[g.job_id].demand
        assert [r.rank for r in g.replicas] == list(range(j.replicas))  # whole gang
        classes, domains = set(), set()
        for r in g.replicas:
            n = nodes[r.node_id]
            slots = {s.index: s for s in n.gpus}
            assert len(r.gpus) == d.gpus
            for index in r.gpus:
                assert index in slots and slots[index].healthy
                assert index not in gpus[n.id], "a GPU given twice"
                gpus[n.id].add(index)
                s = slots[index]
                classes.add((s.model, s.memory_mb))
                assert d.gpu_type is None or d.gpu_type.upper() in s.model.upper()
                assert d.gpu_min_memory_mb is None or s.memory_mb >= d.gpu_min_memory_mb
            assert all(n.labels.get(k) == v for k, v in j.node_selector.items())
            cpus[n.id] += d.cpus
            memory[n.id] += d.memory_mb
            disk[n.id] += d.disk_mb
            level = config.max_spread if j.topology is None else LEVELS[j.topology]
            domains.add(_domain(n, level))
        assert len(classes) <= 1, "a gang of two GPU models"
        assert len(domains) == 1, "a gang beyond the domain it may span"
    for n in snapshot.nodes:
        assert cpus[n.id] <= n.cpus + 1e-6
        assert memory[n.id] <= n.memory_mb
        assert disk[n.id] <= n.disk_mb

    # Quota: borrowing is preemptible; beyond its guarantee, a non-preemptible job only
    # takes GPUs that no guarantee needs. Replayed in plan order (the order of decisions):
    # for each such job, the guaranteed GPUs that cannot be given at once must not grow.
    quotas = {ws: dict(q) for ws, q in snapshot.quotas.items()}
    if not quotas:
        assert not any(g.borrowed for g in plan.placements)
        return
    for g in plan.placements:
        assert pending[g.job_id].preemptible or not g.borrowed, "a non-preemptible job borrowed"
    use = FirmUse(snapshot)
    for g in plan.placements:
        j = pending[g.job_id]
        if j.preemptible or j.demand.gpus == 0:
            continue
        model = next(s.model for s in nodes[g.replicas[0].node_id].gpus)
        excess = use.excess(j, model)
        before = use.unmet()
        use.place(j, g.replicas)
        if excess > 0:
            assert use.unmet() <= before, "a non-preemptible job took GPUs a guarantee needs"


class FirmUse:
    """Non-preemptible GPUs held, per (workspace, quota key) and per model, from the
    snapshot's running jobs on (victims are preemptible: they never count)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.quotas = {ws: dict(q) for ws, q in snapshot.quotas.items()}
        self.nodes = {n.id: n for n in snapshot.nodes}
        self.capacity: dict[str, int] = {}
        for n in snapshot.nodes:
            for s in n.gpus:
                if s.healthy:
                    self.capacity[s.model] = self.capacity.get(s.model, 0) + 1
        self.firm: dict[tuple[str, str | None], int] = {}
        self.models: dict[str, int] = {}
        for held in snapshot.running:
            if not held.preemptible:
                for rep in held.replicas:
                    self._count(held.workspace, rep.node_id, rep.gpus)

    def place(self, job: PendingJob, replicas: tuple[ReplicaPlacement, ...]) -> None:
        for rep in replicas:
            self._count(job.workspace, rep.node_id, rep.gpus)

    def _count(self, ws: str, node_id: str, indices: tuple[int, ...]) -> None:
        for index in indices:
            slot = next(s for s in self.nodes[node_id].gpus if s.index == index)
            if slot.healthy:
                self.add(ws, slot.model, 1)

    def add(self, ws: str, model: str, gpus: int) -> None:
        key = (ws, _bucket(self.quotas, ws, model))
        self.firm[key] = self.firm.get(key, 0) + gpus
        self.models[model] = self.models.get(model, 0) + gpus

    def excess(self, job: PendingJob, model: str) -> int:
        """Of the job's GPUs of this model, those beyond what its guarantee has left."""
        key = _bucket(self.quotas, job.workspace, model)
        held = self.firm.get((job.workspace, key), 0)
        left = 0 if key is None else self.quotas[job.workspace][key] - held
        need = job.demand.gpus * job.replicas
        return need - max(0, min(need, left))

    def unmet(self) -> int:
        return _unmet(self.quotas, self.capacity, self.firm, self.models)


def _unmet(
    quotas: dict[str, dict[str, int]],
    capacity: dict[str, int],
    firm: dict[tuple[str, str | None], int],
    firm_models: dict[str, int],
) -> int:
    """What the guarantees still claim (guarantee less the owner's non-preemptible GPUs)
    less what can be given to them at once from GPUs not held by non-preemptible work:
    a max flow, claims -> the models each may use -> their free room (augmenting paths)."""
    claims: dict[tuple[str, str], int] = {}
    uses: dict[tuple[str, str], list[str]] = {}
    for ws, q in quotas.items():
        for key, gpus in q.items():
            models = sorted(m for m in capacity if _bucket(quotas, ws, m) == key)
            if gpus > 0 and models:
                claims[(ws, key)] = max(0, gpus - firm.get((ws, key), 0))
                uses[(ws, key)] = models
    room = {m: c - firm_models.get(m, 0) for m, c in capacity.items()}
    flow: dict[tuple[tuple[str, str], str], int] = {}
    while True:
        # Breadth first from the claims with something left, through the models they may
        # use, back along flow to other claims, until a model with room left.
        by_model: dict[str, tuple[str, str]] = {}  # model -> the claim that reached it
        by_claim: dict[tuple[str, str], str | None] = {}  # claim -> the model it came back by
        queue = deque(b for b, left in claims.items() if left > 0)
        by_claim.update((b, None) for b in queue)
        end = None
        while queue and end is None:
            b = queue.popleft()
            for m in uses[b]:
                if m in by_model:
                    continue
                by_model[m] = b
                if room[m] > 0:
                    end = m
                    break
                for (b2, m2), f in flow.items():
                    if m2 == m and f > 0 and b2 not in by_claim:
                        by_claim[b2] = m
                        queue.append(b2)
        if end is None:
            return sum(claims.values())
        forward, backward = [], []
        m = end
        while True:
            b = by_model[m]
            forward.append((b, m))
            back = by_claim[b]
            if back is None:
                break
            backward.append((b, back))
            m = back
        amount = min([claims[b], room[end], *(flow[e] for e in backward)])
        for e in forward:
            flow[e] = flow.get(e, 0) + amount
        for e in backward:
            flow[e] -= amount
        claims[b] -= amount
        room[end] -= amount


@settings(max_examples=400, deadline=None)
@given(worlds())
def test_invariants_hold(world: tuple[Snapshot, SchedulerConfig]) -> None:
    snapshot, config = world
    check(snapshot, place(snapshot, NOW, config), config)


@settings(max_examples=300, deadline=None)
@given(contended_worlds())
def test_invariants_hold_under_contention(world: tuple[Snapshot, SchedulerConfig]) -> None:
    snapshot, config = world
    check(snapshot, place(snapshot, NOW, config), config)


@settings(max_examples=300, deadline=None)
@given(st.one_of(worlds(), contended_worlds()))
def test_a_job_refused_for_quota_could_not_have_used_the_pool(
    world: tuple[Snapshot, SchedulerConfig],
) -> None:
    """The pool check is exact, not merely safe: a non-preemptible job kept out by its
    quota would, on any model it may use, have left some guarantee unreachable."""
    snapshot, config = world
    if not snapshot.quotas:
        return
    use = FirmUse(snapshot)
    pending = {j.id: j for j in snapshot.pending}
    for decision in Round(snapshot, NOW, config).decisions():
        job = pending[decision.job_id]
        if decision.placement is not None:
            if not job.preemptible:
                use.place(job, decision.placement.replicas)
            continue
        reason = decision.reason or ""
        if not reason.startswith(f"workspace {job.workspace} h"):  # has no / holds: blocked now
            continue
        need = job.demand.gpus * job.replicas
        for model, capacity in use.capacity.items():
            d = job.demand
            if d.gpu_type and d.gpu_type.upper() not in model.upper():
                continue
            if d.gpu_min_memory_mb and MODELS[model] < d.gpu_min_memory_mb:
                continue
            if use.models.get(model, 0) + need > capacity:
                continue  # not there at all: no question of quota
            excess, before = use.excess(job, model), use.unmet()
            use.add(job.workspace, model, need)
            after = use.unmet()
            use.add(job.workspace, model, -need)
            assert excess > 0 and after > before, (job.id, model, reason)


@settings(max_examples=200, deadline=None)
@given(st.one_of(worlds(), contended_worlds()))
def test_nothing_placed_after_the_reservation_delays_it(
    world: tuple[Snapshot, SchedulerConfig],
) -> None:
    snapshot, config = world
    rnd = Round(snapshot, NOW, config)
    pending = {j.id: j for j in snapshot.pending}
    for decision in rnd.decisions():
        r = rnd.reservation
        if decision.placement is None or r is None or r.job_id == decision.job_id:
            continue
        job = pending[decision.job_id]
        ends_first = job.max_runtime_s is not None and NOW + job.max_runtime_s <= r.start_at
        on_reserved = {p.node_id for p in decision.placement.replicas} & set(r.node_ids)
        assert ends_first or not on_reserved


@settings(max_examples=150, deadline=None)
@given(st.one_of(worlds(), contended_worlds()), st.randoms(use_true_random=False))
def test_the_plan_does_not_depend_on_input_order(
    world: tuple[Snapshot, SchedulerConfig], rng: random.Random
) -> None:
    snapshot, config = world
    shuffled = Snapshot(
        tuple(rng.sample(snapshot.nodes, len(snapshot.nodes))),
        tuple(rng.sample(snapshot.pending, len(snapshot.pending))),
        tuple(rng.sample(snapshot.running, len(snapshot.running))),
        snapshot.quotas,
    )
    assert place(shuffled, NOW, config) == place(snapshot, NOW, config)


@settings(max_examples=150, deadline=None)
@given(st.one_of(worlds(), contended_worlds()), st.randoms(use_true_random=False))
def test_a_scheduler_that_keeps_its_index_plans_as_place_does(
    world: tuple[Snapshot, SchedulerConfig], rng: random.Random
) -> None:
    snapshot, config = world
    scheduler = Scheduler(config)
    assert scheduler.place(snapshot, NOW) == place(snapshot, NOW, config)
    # Next round: some jobs ended (their nodes are new objects, the rest the same ones).
    ended = {r.id for r in snapshot.running if rng.random() < 0.5}
    freed: dict[str, set[int]] = {}
    for r in snapshot.running:
        if r.id in ended:
            for rep in r.replicas:
                freed.setdefault(rep.node_id, set()).update(rep.gpus)
    later = Snapshot(
        tuple(
            replace(n, used_gpus=n.used_gpus - freed[n.id]) if n.id in freed else n
            for n in snapshot.nodes
        ),
        snapshot.pending,
        tuple(r for r in snapshot.running if r.id not in ended),
        snapshot.quotas,
    )
    assert scheduler.place(later, NOW + 1) == place(later, NOW + 1, config)
    assert scheduler.place(snapshot, NOW) == place(snapshot, NOW, config)


def test_a_scheduler_survives_a_running_job_listed_twice() -> None:
    # One object twice, or two objects with one job id: the first counts, in both paths.
    slots = tuple(GpuSlot(g, "H100", 81_920) for g in range(8))
    n = NodeState("a", "a", slots, 64.0, 256_000, 0, used_gpus=frozenset(range(8)))
    d = Demand(4, None, None, 1.0, 0, 0)
    r = RunningJob("r", "a", 0, True, d, (ReplicaPlacement(0, "a", (0, 1, 2, 3)),), 0.0)
    r2 = RunningJob("r", "a", 0, True, d, (ReplicaPlacement(0, "a", (4, 5, 6, 7)),), 0.0)
    pending = (PendingJob("j", 1, Demand(4), 5, 0.0),)
    scheduler = Scheduler()
    for run in [(r, r), (r, r2), (r,), (r, r), (), (r2,), (r,)]:
        snapshot = Snapshot((n,), pending, run)
        assert scheduler.place(snapshot, NOW) == place(snapshot, NOW)
