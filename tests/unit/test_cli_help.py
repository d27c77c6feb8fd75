"""Help screens: flags carry no `<bool>`, values are named after their option."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from corral.cli.main import build_app


@pytest.mark.parametrize(
    "command", [["job", "run"], ["token", "create"], ["endpoint", "deploy"], ["job", "ls"]]
)
def test_help_has_no_python_types_for_flags_and_strings(command: list[str]) -> None:
    result = CliRunner().invoke(build_app(), [*command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output and "<str>" not in result.output
    assert "<list[str]>" not in result.output
    assert "--help" in result.output


def test_an_option_value_is_named_after_its_option() -> None:
    result = CliRunner().invoke(build_app(), ["token", "create", "--help"], env={"COLUMNS": "120"})
    line = next(x for x in result.output.splitlines() if "--name" in x)
    assert "NAME" in line
    role = next(x for x in result.output.splitlines() if "--role" in x)
    assert "<admin|member|viewer|metrics>" in role  # choices still shown


@pytest.mark.parametrize(
    ("command", "flags_type"),
    [
        (["endpoint", "deploy"], "EndpointFlags"),
        (["endpoint", "update"], "EndpointFlags"),
        (["job", "run"], "RunFlags"),
    ],
)
def test_every_field_of_a_flags_dataclass_is_an_option(command: list[str], flags_type: str) -> None:
    """`takes_flags` declares a noun's spec-shaping flags once, for each command that has them."""
    import dataclasses

    from corral.cli import endpointspec, jobspec

    cls = getattr(endpointspec if flags_type == "EndpointFlags" else jobspec, flags_type)
    result = CliRunner().invoke(build_app(), [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    shown = set(re.findall(r"--[a-z][a-z-]*", result.output))
    for field in dataclasses.fields(cls):
        option = "--" + field.name.replace("_", "-")
        assert option in shown, (field.name, sorted(shown))
    assert "--flags" not in shown
