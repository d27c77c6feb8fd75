"""The code fields of job and pod specs: each bad value is refused naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from corral.spec.code import code_fields
from corral.spec.job import JobSpec
from corral.spec.pod import PodSpec

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"environment": {"python": "python3"}}, 'expected a Python version like "3.11"'),
        ({"environment": {"requirements": "../secrets.txt"}}, "relative path inside"),
        ({"environment": {"uv_lock": "/etc/uv.lock"}}, "environment.uv_lock must be"),
        ({"environment": {"requirements": ["torch\nevil"]}}, "one non-empty line"),
        ({"environment": {"pip": ["x"]}}, "Extra inputs are not permitted"),
        ({"image": "Not An Image"}, "expected a container image reference"),
        ({"setup": "   "}, "`setup` must not be empty"),
        ({"image": "debian:12", "setup": "apt-get install x"}, "`setup` with `image`"),
        ({"image": "debian", "environment": {"python": "3.11"}}, "`environment` with `image`"),
        ({"workdir": ".", "working_dir": "/srv/code"}, "give one of `workdir`"),
    ],
)
def test_a_bad_code_field_is_refused_with_its_name(fields: dict[str, object], says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate({"command": "python train.py", **fields})
    assert says in str(caught.value), str(caught.value)


def test_code_fields_are_what_the_node_gets() -> None:
    job = JobSpec(
        command="python train.py",
        workdir=DIGEST,
        environment={"python": "3.11", "requirements": ["tabulate>=0.9"]},
        setup="echo once",
    )
    assert code_fields(job) == {
        "workdir": "ab" * 32,
        "environment": {"python": "3.11", "requirements": ["tabulate>=0.9"]},
        "setup": "echo once",
        "image": None,
    }
    pod = PodSpec(image="ghcr.io/org/dev:1.2", workdir=DIGEST)
    assert code_fields(pod)["image"] == "ghcr.io/org/dev:1.2"
    assert code_fields(JobSpec(command="true")) == dict.fromkeys(
        ("workdir", "environment", "setup", "image")
    )
