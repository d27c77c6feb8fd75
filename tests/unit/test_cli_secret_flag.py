"""`corral job run --secret ENV=NAME`: names a workspace secret; the value never passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.cli.jobspec import RunFlags, build_job_spec
from corral.cli.output import CliError


def test_secret_flags_name_secrets_and_merge_with_the_files(tmp_path: Path) -> None:
    spec = build_job_spec([], ["python", "x.py"], RunFlags(secret=["HF_TOKEN=hf-token"]))
    assert spec.secrets == {"HF_TOKEN": "hf-token"} and "HF_TOKEN" not in spec.env
    path = tmp_path / "job.yaml"
    path.write_text("command: 'true'\nsecrets: {A: one}\n")
    spec = build_job_spec([str(path)], None, RunFlags(secret=["B=two"]))
    assert spec.secrets == {"A": "one", "B": "two"}


@pytest.mark.parametrize("bad", ["HF_TOKEN", "=x", "HF_TOKEN="])
def test_a_malformed_secret_flag_is_one_clear_error(bad: str) -> None:
    with pytest.raises(CliError, match="expected ENV=SECRET"):
        build_job_spec([], ["true"], RunFlags(secret=[bad]))
