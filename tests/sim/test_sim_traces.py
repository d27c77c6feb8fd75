"""Trace loaders on small samples written in each schema, and on the shipped OpenB files."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.sim.traces import (
    load_openb_jobs,
    load_openb_nodes,
    load_philly_csv,
    write_philly_csv,
)
from corral.sim.workload import Job
from corral.spec.errors import SpecError

OPENB = Path(__file__).resolve().parents[2].parent / "shared" / "traces" / "openb"

PHILLY_SAMPLE = """\
timestamp,duration,num_gpus,gpu_time,cluster
2017-10-03 12:00:10,600,16,9600,vc2
2017-10-03 12:00:00,3600,1,3600,vc1
2017-10-03 12:05:00,120,4,480,vc1
2017-10-03 12:00:10,60,12,720,vc3
"""


def test_philly_rows_are_sorted_and_shaped_into_gangs(tmp_path: Path) -> None:
    path = tmp_path / "philly.csv"
    path.write_text(PHILLY_SAMPLE)
    trace = load_philly_csv(path, node_gpus=8)
    got = [(j.submit_s, j.duration_s, j.replicas, j.gpus, j.workspace) for j in trace.jobs]
    assert got == [
        (0.0, 3600.0, 1, 1, "vc1"),
        (10.0, 600.0, 2, 8, "vc2"),  # ties keep file order
        (10.0, 60.0, 2, 6, "vc3"),  # 12 GPUs: two replicas of 6
        (300.0, 120.0, 1, 4, "vc1"),
    ]
    assert all(j.estimate_s == j.duration_s and j.priority == 0 for j in trace.jobs)
    assert len(load_philly_csv(path, max_jobs=2).jobs) == 2


def test_philly_round_trip(tmp_path: Path) -> None:
    jobs = [Job(f"j{i}", float(i * 7), float(100 + i), gpus=1, workspace="vc") for i in range(5)]
    path = tmp_path / "out.csv"
    write_philly_csv(jobs, path)
    back = load_philly_csv(path).jobs
    assert [(j.submit_s, j.duration_s, j.total_gpus) for j in back] == [
        (j.submit_s, j.duration_s, 1) for j in jobs
    ]
    assert path.read_text().splitlines()[0] == "timestamp,duration,num_gpus,gpu_time,cluster"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("timestamp,duration\n2017-10-03 12:00:00,5\n", "header"),
        ("timestamp,duration,num_gpus\nyesterday,5,1\n", "line 2: timestamp"),
        ("timestamp,duration,num_gpus\n2017-10-03 12:00:00,-5,1\n", "line 2: duration"),
        ("timestamp,duration,num_gpus\n2017-10-03 12:00:00,5,1.5\n", "line 2: num_gpus"),
    ],
)
def test_philly_errors_name_the_line_and_column(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_philly_csv(path)
    assert info.value.errors[0].path == where


OPENB_PODS = """\
name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time
pod-b,6000,12288,1,460,,BE,Running,50,150,50
pod-a,12000,16384,1,1000,T4,LS,Running,0,1000,0
pod-c,4000,8192,0,0,,Burstable,Succeeded,60,70,60
pod-d,88000,327680,8,1000,V100M16|V100M32,Guaranteed,Pending,70,90,
"""

OPENB_NODES = """\
sn,cpu_milli,memory_mib,gpu,model
n0,64000,262144,2,P100
n1,96000,393216,8,G2
"""


def test_openb_tasks_round_fractions_up_and_keep_one_model_constraints(tmp_path: Path) -> None:
    path = tmp_path / "pods.csv"
    path.write_text(OPENB_PODS)
    trace = load_openb_jobs(path)
    by = {j.id: j for j in trace.jobs}
    assert [j.id for j in trace.jobs] == ["pod-a", "pod-b", "pod-c", "pod-d"]
    a, b, c, d = by["pod-a"], by["pod-b"], by["pod-c"], by["pod-d"]
    assert (b.gpus, b.gpu_milli, b.cpus, b.memory_mb, b.duration_s) == (1, 460, 6.0, 12288, 100)
    assert (b.priority, b.preemptible) == (0, True)  # best effort
    assert (a.gpu_type, a.priority, a.preemptible) == ("T4", 10, False)
    assert (c.gpus, c.priority) == (0, 5)
    assert (d.gpus, d.gpu_type, d.duration_s) == (8, None, 20)  # several models: dropped
    assert any("1 fractional" in n for n in trace.notes)
    assert any("1 multi-model" in n for n in trace.notes)


def test_openb_node_list(tmp_path: Path) -> None:
    path = tmp_path / "nodes.csv"
    path.write_text(OPENB_NODES)
    cluster = load_openb_nodes(path)
    assert [(n.id, n.gpus, n.gpu_model, n.cpus, n.memory_mb) for n in cluster.nodes] == [
        ("n0", 2, "P100", 64.0, 262144),
        ("n1", 8, "G2", 96.0, 393216),
    ]


def test_the_shipped_openb_trace() -> None:
    cluster = load_openb_nodes(OPENB / "openb_node_list_gpu_node.csv")
    assert len(cluster.nodes) == 1213
    assert cluster.total_gpus == 6212
    trace = load_openb_jobs(OPENB / "openb_pod_list_default.csv")
    assert len(trace.jobs) == 8152
    assert all(a.submit_s <= b.submit_s for a, b in zip(trace.jobs, trace.jobs[1:], strict=False))
    assert max(j.total_gpus for j in trace.jobs) == 8
