"""JobSpec and Resources: what users write, and the errors they get."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.spec import JobSpec, SpecError, load_job_spec, parse_job_spec
from corral.spec.units import parse_size_mib


@pytest.mark.parametrize(
    ("gpus", "count", "type_"),
    [
        ("H100:8", 8, "H100"),
        ("H100", 1, "H100"),
        ("4", 4, None),
        (2, 2, None),
        ({"count": 8, "type": "A100", "min_memory": "40Gi"}, 8, "A100"),
        (None, 0, None),
    ],
)
def test_gpu_requests_in_every_accepted_form(gpus: object, count: int, type_: str | None) -> None:
    spec = parse_job_spec({"command": "true", "resources": {"gpus": gpus}})
    assert (spec.resources.gpus.count, spec.resources.gpus.type) == (count, type_)


@pytest.mark.parametrize(
    ("text", "mib"),
    [("16Gi", 16384), ("512Mi", 512), (32, 32768), ("1Ti", 1048576), ("80GB", 76294)],
)
def test_sizes(text: object, mib: int) -> None:
    assert parse_size_mib(text) == mib


def test_a_spec_survives_storage_unchanged() -> None:
    spec = parse_job_spec(
        {
            "command": "true",
            "resources": {"gpus": {"count": 1, "min_memory": "40GB"}, "memory": "3Gi", "disk": 10},
        }
    )
    assert JobSpec.model_validate(spec.model_dump(mode="json")) == spec


def test_every_bad_field_is_named_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("command: python train.py\nreplicsa: 2\nresources:\n  gpus: H100:-1\n")
    with pytest.raises(SpecError) as err:
        load_job_spec(path)
    found = {(e.path, e.message) for e in err.value.errors}
    assert ("replicsa", "unknown field") in found
    assert any(p == "resources.gpus.count" for p, _ in found)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("data", "path", "needle"),
    [
        ({"command": "x", "entrypoint": ["x"]}, "", "exactly one"),
        ({}, "", "exactly one"),
        ({"command": "x", "name": "Bad_Name"}, "name", "not a valid job name"),
        ({"command": "x", "env": {"1X": "y"}}, "env", "environment variable"),
        ({"command": "x", "files": {"../evil": "y"}}, "files", "relative path"),
        ({"command": "x", "replicas": 0}, "replicas", "greater than or equal to 1"),
        ({"command": "x", "resources": {"memory": "lots"}}, "resources.memory", "not a size"),
    ],
)
def test_bad_specs_are_refused_clearly(data: dict[str, object], path: str, needle: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_job_spec(data)
    assert any(e.path == path and needle in e.message for e in err.value.errors), err.value


def test_invalid_yaml_says_where(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("command: [unclosed\n")
    with pytest.raises(SpecError, match="invalid YAML: line"):
        load_job_spec(path)


def test_command_runs_in_a_shell_and_entrypoint_without() -> None:
    assert parse_job_spec({"command": "echo $X"}).argv() == ["/bin/sh", "-c", "echo $X"]
    spec = parse_job_spec({"entrypoint": ["python", "-c"], "args": ["print(1)"]})
    assert spec.argv() == ["python", "-c", "print(1)"]
