"""The agent's pure parts: fake GPU inventories, settings, log chunking, reconciliation."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.agent.config import AgentConfig, AgentConfigError, check_config
from corral.agent.gpu.fake import fake_gpus, parse_fake_gpus
from corral.agent.identity import NodeIdentity, load_identity, save_identity
from corral.agent.layout import shell_exit_code
from corral.agent.logs import split_chunks, utf8_boundary
from corral.agent.reconcile import RecordState, plan
from corral.wire.agent import ReplicaAssignment

# --- fake GPUs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "model", "count"),
    [("H100:8", "H100", 8), ("h200:2", "H200", 2), ("L4", "L4", 1), ("A100:0", "A100", 0)],
)
def test_fake_gpu_specs_parse(spec: str, model: str, count: int) -> None:
    assert parse_fake_gpus(spec) == (model, count)


@pytest.mark.parametrize("spec", ["H100:-1", "H100:x", ":8", "", "H100:8:1", "H100:100000"])
def test_bad_fake_gpu_specs_are_refused_with_the_expected_form(spec: str) -> None:
    with pytest.raises(ValueError, match=r"H100:8|between 0 and"):
        parse_fake_gpus(spec)


@pytest.mark.parametrize(
    ("model", "gib"),
    [("H100", 80), ("H200", 141), ("A100", 80), ("L40S", 48), ("L4", 24), ("T4", 16)],
)
def test_fake_gpus_get_memory_by_model(model: str, gib: int) -> None:
    report = fake_gpus(f"{model}:2", "box")
    assert report.backend == "fake"
    assert [(g.index, g.uuid, g.model, g.memory_mb) for g in report.gpus] == [
        (0, "FAKE-box-0", model, gib * 1024),
        (1, "FAKE-box-1", model, gib * 1024),
    ]
    assert report.note.startswith("FAKE GPUs: 2 x")


# --- settings ---------------------------------------------------------------------------


def test_a_bad_fake_gpu_setting_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match=r"fake GPUs: 'H100:-1'"):
        check_config(AgentConfig(server="http://x:1", state_dir=tmp_path, fake_gpus="H100:-1"))


@pytest.mark.parametrize("server", ["x:1", "ftp://x", "http://", "127.0.0.1:7390"])
def test_a_server_that_is_not_an_http_url_is_refused(tmp_path: Path, server: str) -> None:
    with pytest.raises(AgentConfigError, match="expected an http:// or https:// URL"):
        check_config(AgentConfig(server=server, state_dir=tmp_path))


def test_run_agent_returns_2_on_a_bad_setting(tmp_path: Path) -> None:
    from corral.agent.main import run_agent

    assert run_agent(AgentConfig("http://x:1", tmp_path, fake_gpus="H100:-1")) == 2
    assert not (tmp_path / "replicas").exists()  # refused before touching anything


# --- node identity ----------------------------------------------------------------------


def test_node_json_is_private_and_bound_to_its_server(tmp_path: Path) -> None:
    identity = NodeIdentity("http://cp:7390", "n-1", "crn_secret")
    save_identity(tmp_path, identity)
    assert stat.S_IMODE(os.stat(tmp_path / "node.json").st_mode) == 0o600
    assert load_identity(tmp_path, "http://cp:7390/") == identity
    assert load_identity(tmp_path, "http://other:7390") is None
    assert "crn_secret" not in repr(identity)


def test_an_unreadable_node_json_means_no_identity(tmp_path: Path) -> None:
    (tmp_path / "node.json").write_text("{not json")
    assert load_identity(tmp_path, "http://cp:7390") is None


# --- log chunks -------------------------------------------------------------------------


def test_an_unfinished_character_is_held_back_until_final() -> None:
    euro = "€".encode()  # 3 bytes
    assert utf8_boundary(b"ab" + euro[:2], final=False) == 2
    assert utf8_boundary(b"ab" + euro[:1], final=False) == 2
    assert utf8_boundary(b"ab" + euro, final=False) == 5
    assert utf8_boundary(b"ab" + euro[:2], final=True) == 4
    assert split_chunks(b"ab" + euro[:2], final=False) == [b"ab"]
    assert split_chunks(euro[:2], final=False) == []


def test_chunks_are_cut_at_character_boundaries_within_the_limit() -> None:
    text = ("a" + "€" * 5 + "😀") * 50
    data = text.encode()
    pieces = split_chunks(data, final=False, limit=7)
    assert b"".join(pieces) == data
    assert all(0 < len(p) <= 7 for p in pieces)
    assert "".join(p.decode("utf-8") for p in pieces) == text  # each decodes on its own


@given(st.text(), st.integers(min_value=4, max_value=70))
def test_chunking_loses_nothing_and_every_chunk_decodes(text: str, limit: int) -> None:
    data = text.encode()
    pieces = split_chunks(data, final=True, limit=limit)
    assert b"".join(pieces) == data
    assert all(len(p) <= limit for p in pieces)
    assert "".join(p.decode("utf-8") for p in pieces) == text


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=70))
def test_arbitrary_bytes_are_all_sent_once_final(data: bytes, limit: int) -> None:
    pieces = split_chunks(data, final=True, limit=limit)
    assert b"".join(pieces) == data
    assert all(0 < len(p) <= limit for p in pieces)


def test_the_real_limit_is_64_kib() -> None:
    data = ("x" * 65535 + "€").encode()  # the euro sign straddles the 64 KiB line
    pieces = split_chunks(data, final=True)
    assert [len(p) for p in pieces] == [65535, 3]


# --- reconciliation ---------------------------------------------------------------------


def assignment(rid: str) -> ReplicaAssignment:
    return ReplicaAssignment(
        replica_id=rid, job="j", workspace="w", attempt=1, rank=0, argv=["true"], env={}
    )


@pytest.mark.parametrize(
    ("known", "desired", "start", "stop"),
    [
        ({}, ["a", "b"], ["a", "b"], []),
        ({"a": "running"}, ["a", "b"], ["b"], []),
        # An exited replica is never started again, even though it is still desired.
        ({"a": "exited"}, ["a"], [], []),
        ({"a": "running", "b": "running"}, ["a"], [], ["b"]),
        # Stopping one already, and exited ones need no stop.
        ({"a": "stopping", "b": "exited"}, [], [], []),
        ({"x": "running", "a": "running"}, [], [], ["a", "x"]),
        ({}, ["a", "a"], ["a"], []),  # a duplicate in the set still starts once
    ],
)
def test_reconcile_starts_the_unknown_and_stops_the_unwanted(
    known: dict[str, RecordState], desired: list[str], start: list[str], stop: list[str]
) -> None:
    result = plan(known, [assignment(rid) for rid in desired])
    assert [a.replica_id for a in result.start] == start
    assert list(result.stop) == stop


@pytest.mark.parametrize(("returncode", "code"), [(0, 0), (3, 3), (-15, 143), (-9, 137)])
def test_exit_codes_are_shell_style(returncode: int, code: int) -> None:
    assert shell_exit_code(returncode) == code


def test_workloads_get_the_collectives_interface_of_the_nodes_address() -> None:
    from corral.agent.network import collective_env, interface_of
    from corral.agent.runner import _shim_environment

    assert interface_of("127.0.0.1") == "lo"
    assert collective_env("127.0.0.1") == {"GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"}
    assert collective_env("203.0.113.77") == {}  # not an address of this machine
    env = _shim_environment({"GLOO_SOCKET_IFNAME": "lo", "PATH": "/nowhere"})
    assert env["GLOO_SOCKET_IFNAME"] == "lo" and env["PATH"] != "/nowhere"
