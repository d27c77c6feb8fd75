"""Following a whole job (SDK and CLI, against the real app in-process on SQLite): why it
waits while pending, every replica's log prefixed by rank, and Ctrl-C saying the truth."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient

from corral.cli.jobfollow import follow_job as cli_follow_job
from corral.cli.jobfollow import stopped_text
from corral.cli.logprint import LogPrinter
from corral.client import Client
from corral.client.follow import Ended, LogText, Waiting, follow_job
from support.app import ADMIN_TOKEN, AppTransport
from support.cli import UNPLACEABLE, Cli
from support.cli import finish_job as finish_with_logs
from support.cli import submit_job as submit


def sdk(server: TestClient) -> Client:
    return Client("http://testserver", ADMIN_TOKEN, "default", transport=AppTransport(server))


def test_follow_says_why_a_pending_job_waits_then_how_it_ended(server: TestClient) -> None:
    submit(server, "wait", **UNPLACEABLE)
    client = sdk(server)
    cancelled: list[bool] = []

    def sleep(_: float) -> None:  # the job is cancelled while the follower waits
        if not cancelled:
            client.cancel_job("wait")
            cancelled.append(True)

    client._sleep = sleep
    events = list(follow_job(client, "wait"))
    assert isinstance(events[0], Waiting) and events[0].state == "pending"
    assert events[0].reason  # the scheduler's words, e.g. which resource is short
    assert events[-1] == Ended("cancelled")
    assert not any(isinstance(e, LogText) for e in events)


def test_follow_reads_every_replica_log(server: TestClient) -> None:
    submit(server, "gang", replicas=2, **UNPLACEABLE)
    finish_with_logs(server, "gang", {0: ["a0\n", "b0\n"], 1: ["a1\nb1", "\n"]})
    client = sdk(server)
    client._sleep = lambda _: None
    events = list(follow_job(client, "gang"))
    text = {
        rank: "".join(e.data for e in events if isinstance(e, LogText) and e.rank == rank)
        for rank in (0, 1)
    }
    assert text == {0: "a0\nb0\n", 1: "a1\nb1\n"}
    assert events[-1] == Ended("succeeded")


def test_ctrl_c_while_pending_says_it_is_still_pending(
    server: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    submit(server, "queued", **UNPLACEABLE)
    client = sdk(server)

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    client._sleep = interrupt
    assert cli_follow_job(client, "queued", 1) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert "pending: " in err  # the reason, shown while it waits
    assert "job queued is still pending: it will run when placed" in err
    assert "corral job cancel queued" in err
    assert "keeps running" not in err


def test_stopped_text_says_the_state_it_was_left_in() -> None:
    assert "keeps running" in stopped_text("j", "running")
    assert "still pending" in stopped_text("j", "pending")
    assert "has ended (failed)" in stopped_text("j", "failed")


def test_job_logs_replica_all_prefixes_each_line_with_its_rank(
    server: TestClient, cli: Cli
) -> None:
    submit(server, "gang", replicas=2, **UNPLACEABLE)
    finish_with_logs(server, "gang", {0: ["zero\n"], 1: ["one\n", "tail"]})
    for extra in ([], ["-f"]):
        result = cli("job", "logs", "gang", "--replica", "all", *extra)
        assert result.exit_code == 0, result.output
        assert sorted(result.stdout.splitlines()) == ["[0] zero", "[1] one", "[1] tail"]
    one = cli("job", "logs", "gang", "--replica", "1")
    assert one.stdout == "one\ntail\n"
    bad = cli("job", "logs", "gang", "--replica", "first")
    assert bad.exit_code == 2
    assert "--replica: expected a rank (0, 1, ...) or all" in bad.output


def test_job_run_streams_every_replica_prefixed(
    server: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    submit(server, "done", replicas=3, **UNPLACEABLE)
    finish_with_logs(server, "done", {0: ["r0\n"], 1: ["r1\n"], 2: ["r2\n"]})
    client = sdk(server)
    client._sleep = lambda _: None
    assert cli_follow_job(client, "done", 3) == 0
    captured = capsys.readouterr()
    assert sorted(captured.out.splitlines()) == ["[0] r0", "[1] r1", "[2] r2"]
    assert "succeeded" in captured.err


def test_log_printer_holds_partial_lines_until_they_end() -> None:
    out = io.StringIO()
    printer = LogPrinter(prefixed=True, stream=out)
    printer.write(0, "hel")
    printer.write(1, "x\ny")
    printer.write(0, "lo\n")
    printer.close()
    assert out.getvalue() == "[1] x\n[0] hello\n[1] y\n"
    plain = io.StringIO()
    single = LogPrinter(prefixed=False, stream=plain)
    single.write(0, "no newline")
    single.close()
    assert plain.getvalue() == "no newline\n"


def test_one_answer_for_every_replica_is_bounded_and_the_rest_follows(server: TestClient) -> None:
    """A job of many replicas with long logs: each `logs/all` answer holds about 1 MiB in
    all (was 1 MiB per replica share but at least a whole chunk each: unbounded), and
    reading on from its offsets gets every byte."""
    from corral.server.services.job_logs import LOG_PAGE_BYTES

    replicas, chunk = 40, "x" * 60_000 + "\n"  # 40 x 3 chunks of 60 kB: 7.2 MB in all
    submit(server, "wide", replicas=replicas, **UNPLACEABLE)
    finish_with_logs(server, "wide", {r: [chunk] * 3 for r in range(replicas)})
    client = sdk(server)
    first = client.all_logs("wide")
    assert sum(len(p.data) for p in first.pages) <= LOG_PAGE_BYTES + len(chunk)
    got = {p.replica: p.data for p in first.pages}
    answer, offsets = first, [p.next_offset for p in first.pages]
    for _ in range(100):
        if all(p.complete for p in answer.pages):
            break
        answer = client.all_logs("wide", offsets, answer.attempt)
        for p in answer.pages:
            got[p.replica] += p.data
        offsets = [p.next_offset for p in answer.pages]
    assert all(p.complete for p in answer.pages)
    assert all(got[r] == chunk * 3 for r in range(replicas))
