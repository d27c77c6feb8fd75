"""The node's listening ports and whose they are: /proc parsing (pure), sock_diag against real
sockets, the replica's processes (pure), ownership of real listeners, and the words of an
unready replica's reason (pure)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.agent import ports, probes, procs
from corral.agent.ownership import Ownership, held_by_others
from corral.agent.ports import Listener, parse_proc_net
from corral.agent.procs import Proc, replica_pids
from corral.wire.agent import Probe

# /proc/net/tcp and tcp6 as a little-endian kernel prints them: a listener on
# 127.0.0.1:8000 (uid 1000), an established connection (not a listener), and on
# [::]:29500 and [::ffff:127.0.0.1]:5432 (uid 0).
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1
   1: 0100007F:1F40 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:733C 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1
   1: 0000000000000000FFFF00000100007F:1538 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 78 1
"""  # noqa: E501


@pytest.mark.skipif(sys.byteorder != "little", reason="the sample is a little-endian kernel's")
def test_proc_net_tcp_listeners_are_parsed_and_connections_skipped() -> None:
    assert parse_proc_net(TCP, v6=False) == [Listener(8000, "127.0.0.1", 4242, 1000)]
    assert parse_proc_net(TCP6, v6=True) == [
        Listener(29500, "::", 77, 0),
        Listener(5432, "::ffff:127.0.0.1", 78, 0),
    ]
    assert parse_proc_net("header only\n  0: garbage\n", v6=False) == []


@pytest.mark.parametrize(
    ("address", "answers"),
    [
        ("127.0.0.1", True),
        ("0.0.0.0", True),
        ("::", True),
        ("::ffff:127.0.0.1", True),
        ("10.1.2.3", False),
        ("::1", False),
    ],
)
def test_which_listeners_a_probe_of_loopback_may_reach(address: str, answers: bool) -> None:
    assert Listener(1, address, 1, 0).answers_loopback is answers


@pytest.fixture
def held() -> Iterator[socket.socket]:
    """A socket this test process listens on (both families where IPv6 exists)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def test_sock_diag_and_proc_net_tcp_both_see_a_real_listener(held: socket.socket) -> None:
    port = held.getsockname()[1]
    inode = os.fstat(held.fileno()).st_ino
    seen = ports.on_port(port)
    assert seen == [Listener(port, "127.0.0.1", inode, os.getuid())]
    text = Path("/proc/net/tcp").read_text()
    assert [x for x in parse_proc_net(text, v6=False) if x.port == port] == seen
    assert port in ports.listening_ports()
    held.close()
    assert ports.on_port(port) == []


def test_an_ipv6_wildcard_listener_is_seen(tmp_path: Path) -> None:
    if not socket.has_ipv6 or not Path("/proc/net/tcp6").exists():
        pytest.skip("no IPv6 here")
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::", 0))
        sock.listen()
        port = sock.getsockname()[1]
        [seen] = ports.on_port(port)
        assert (seen.address, seen.inode) == ("::", os.fstat(sock.fileno()).st_ino)
        assert seen.answers_loopback


def proc(pid: int, ppid: int, pgid: int) -> Proc:
    return Proc(pid, ppid, pgid, f"p{pid}", 0)


def test_a_replicas_processes_are_its_shims_tree_and_its_process_group() -> None:
    table = {
        p.pid: p
        for p in [
            proc(1, 0, 1),
            proc(10, 1, 10),  # the shim
            proc(11, 10, 11),  # the workload, its own group
            proc(12, 11, 11),  # its child
            proc(13, 1, 11),  # a daemon that left the tree, still in the workload's group
            proc(20, 1, 20),  # a stranger
            proc(21, 20, 20),
        ]
    }
    assert replica_pids(table, 10, 11) == {10, 11, 12, 13}
    assert replica_pids(table, None, 11) == {11, 12, 13}
    assert replica_pids(table, 99, None) == set(), "a shim that is gone has no tree"
    assert replica_pids(table, 10, 1) == {10, 11, 12}, "never the whole of pid 1's group"


LISTEN = (
    "import socket, sys, time\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); print('up', flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture
def listener() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Another process, in its own process group, listening on a free port."""
    with socket.socket() as probe_sock:
        probe_sock.bind(("127.0.0.1", 0))
        port = probe_sock.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, "-c", LISTEN, str(port)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "up"
    yield child, port
    child.kill()
    child.wait()


def test_a_listener_of_the_replicas_own_tree_is_its_own(
    listener: tuple[subprocess.Popen[str], int],
) -> None:
    child, port = listener
    # The child as the replica's workload: its own process group, as the shim makes it.
    assert Ownership().check(port, None, child.pid) is None
    assert held_by_others(port, None, child.pid) == []


def test_another_process_on_the_port_is_named_and_never_taken_for_the_replica(
    listener: tuple[subprocess.Popen[str], int],
) -> None:
    child, port = listener
    with subprocess.Popen(["sleep", "60"], start_new_session=True) as replica:
        try:
            owner = Ownership()
            why = owner.check(port, None, replica.pid)
            name = procs.stat(child.pid).name  # type: ignore[union-attr]
            assert name.startswith("python")
            # The replica's workspace reads this: the holder (maybe another workspace's) is
            # not named; the agent's log names it for the operator (Holder.who, below).
            assert why == f"port {port} is held by another process, not this replica"
            assert owner.check(port, None, replica.pid) == why, "judged once per socket"
            [holder] = held_by_others(port, None, replica.pid)
            assert (holder.pid, holder.port) == (child.pid, port)
            assert holder.start_time == procs.stat(child.pid).start_time  # type: ignore[union-attr]
        finally:
            replica.kill()


def test_nothing_listening_is_no_stranger() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening
        assert Ownership().check(port, None, None) is None
        assert held_by_others(port, None, None) == []


# --- the words of an unready replica (probes.py, pure) -----------------------------------

HEALTH = Probe(port=8000, readiness_path="/health", failure_threshold=3, period_s=1.0)


def test_failures_read_as_a_user_would_say_them() -> None:
    assert probes.answered("/health", 404).reason(40.2) == "GET /health answered 404 for 40 s"
    assert probes.refused(8000).reason(12) == "connection refused on port 8000 for 12 s"
    assert probes.refused(8000).reason(0.25) == "connection refused on port 8000 for 0.2 s"
    assert (
        probes.timed_out("/health", 5).reason(7.5)
        == "GET /health timed out after 5 s (failing for 7.5 s)"
    )
    assert (
        probes.foreign("port 8000 is held by another process (pid 7, python)").reason(3)
        == "port 8000 is held by another process (pid 7, python) (failing for 3 s)"
    )


def run_failures(
    results: list[probes.Failure | None], start: float = 100.0
) -> tuple[probes.ProbeState, list[tuple[bool | None, str | None]]]:
    """Feed results one period apart; what the prober would report, and when."""
    state = probes.first(start)
    sent: list[tuple[bool | None, str | None]] = []
    for failure in results:
        now = state.due
        after = probes.observe(HEALTH, state, failure is None, now, now, failure)
        verdict = probes.news(state, after)
        state = after
        if verdict is not None or probes.reason_due(state, now):
            sent.append((state.ready, probes.reason(state, now)))
            state = probes.reported(state, now)
    return state, sent


def test_the_reason_comes_with_the_unready_verdict_and_counts_from_the_first_failure() -> None:
    four04 = probes.answered("/health", 404)
    _, sent = run_failures([None, four04, four04, four04])
    assert sent == [(True, None), (False, "GET /health answered 404 for 2 s")]


def test_the_reason_is_sent_again_when_the_failure_changes_or_ages() -> None:
    four04, refused = probes.answered("/health", 404), probes.refused(8000)
    _, sent = run_failures([four04] * 3 + [refused] + [refused] * 12)
    assert sent == [
        (False, "GET /health answered 404 for 2 s"),
        (False, "connection refused on port 8000 for 0 s"),  # another failure: at once
        (False, "connection refused on port 8000 for 10 s"),  # the same, 10 s later
    ]


def test_a_pass_clears_the_reason() -> None:
    four04 = probes.answered("/health", 404)
    state, sent = run_failures([four04] * 3 + [None])
    assert sent[-1] == (True, None)
    assert probes.reason(state, state.due) is None and state.failing_since is None


def test_a_long_readiness_path_makes_a_reason_that_still_fits_a_report(tmp_path: Path) -> None:
    from corral.agent.records import ReplicaRecord
    from corral.wire.agent import REASON_MAX, ReplicaAssignment

    assignment = ReplicaAssignment(
        replica_id="r1",
        job="ep",
        workspace="default",
        attempt=1,
        rank=0,
        argv=["serve"],
        env={},
        probe=HEALTH,
    )
    record = ReplicaRecord(replica_id="r1", path=tmp_path, assignment=assignment, pid=1)
    record.ready = False
    record.unready_reason = probes.answered("/" + "x" * 5000, 404).reason(3)
    sent = record.report().unready_reason
    assert sent is not None and len(sent) == REASON_MAX and sent.endswith("…")


def test_who_listens_is_looked_at_before_ready_while_ready_now_and_then_and_before_unready() -> (
    None
):
    due = probes.owner_check_due
    start = probes.first(0.0)
    assert due(HEALTH, start, True, None, 0.0), "a pass that would make it ready"
    ready = probes.observe(HEALTH, start, True, 0.0, 0.0)
    assert not due(HEALTH, ready, True, 0.0, probes.OWNER_RECHECK_S - 0.1)
    assert due(HEALTH, ready, True, 0.0, probes.OWNER_RECHECK_S)
    assert due(HEALTH, ready, True, None, 1.0), "never verified: look"
    failing = probes.observe(HEALTH, ready, False, 1.0, 1.0, probes.refused(8000))
    assert not due(HEALTH, failing, False, 0.0, 2.0), "one failure of three changes nothing"
    failing = probes.observe(HEALTH, failing, False, 2.0, 2.0, probes.refused(8000))
    assert due(HEALTH, failing, False, 0.0, 3.0), "the failure that makes it unready"
    unready = probes.observe(HEALTH, failing, False, 3.0, 3.0, probes.refused(8000))
    assert unready.ready is False and not due(HEALTH, unready, False, None, 4.0)
