"""What one spec may carry: the same bounds for jobs and endpoints, each naming its field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from corral.server.errors import Invalid
from corral.server.services.jobs import check_checkpoint_dir
from corral.spec.endpoint import EndpointSpec
from corral.spec.job import JobSpec

BAD_FILES = [
    {"../../x": "a"},
    {"/tmp/x": "a"},
    {"": "a"},
    {"a/../../b": "a"},
    {f"f{i}": "" for i in range(65)},
    {"big": "x" * (256 * 1024 + 1)},
    {"x" * 300: ""},
]


@pytest.mark.parametrize("files", BAD_FILES)
@pytest.mark.parametrize("kind", [JobSpec, EndpointSpec])
def test_bad_files_are_refused_the_same_way_for_jobs_and_endpoints(
    kind: type[JobSpec] | type[EndpointSpec], files: dict[str, str]
) -> None:
    with pytest.raises(ValidationError) as info:
        kind.model_validate({"command": "true", "files": files})
    assert info.value.errors()[0]["loc"][0] == "files"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("env", {f"V{i}": "" for i in range(257)}),
        ("env", {"BIG": "y" * 70_000}),
        ("env", {"NUL": "a\0b"}),
        ("command", "z" * 70_000),
        ("entrypoint", ["a"] * 5000),
    ],
)
@pytest.mark.parametrize("kind", [JobSpec, EndpointSpec])
def test_oversized_fields_are_refused(
    kind: type[JobSpec] | type[EndpointSpec], field: str, value: object
) -> None:
    body: dict[str, object] = {"command": "true", field: value}
    if field == "entrypoint":
        body.pop("command")
    with pytest.raises(ValidationError) as info:
        kind.model_validate(body)
    assert info.value.errors()[0]["loc"][0] == field


def test_specs_within_the_bounds_pass() -> None:
    files = {f"src/m{i}.py": "x" * 1000 for i in range(60)}
    JobSpec.model_validate({"command": "true", "files": files, "env": {"A": "b" * 1000}})
    EndpointSpec.model_validate({"command": "true", "files": files})


@pytest.mark.parametrize(
    "value",
    [
        "/ckpt/team-a",
        "/ckpt/team-a/job",
        "/ckpt/team-a/x/y/",
        "file:///ckpt/team-a/job",
        "s3://bucket/anything",
        None,
    ],
)
def test_checkpoint_dirs_inside_the_workspace_or_object_stores_pass(value: str | None) -> None:
    check_checkpoint_dir(value, "/ckpt", "team-a")


@pytest.mark.parametrize(
    "value",
    [
        "/ckpt/team-b/job",
        "/ckpt/team-a/../team-b/job",
        "/ckpt/team-ab/job",
        "/etc",
        "/ckpt",
        "file:///ckpt/team-b",
    ],
)
def test_checkpoint_dirs_outside_the_workspace_are_refused(value: str) -> None:
    with pytest.raises(Invalid) as info:
        check_checkpoint_dir(value, "/ckpt/", "team-a")
    assert "/ckpt/team-a/" in str(info.value.message)
