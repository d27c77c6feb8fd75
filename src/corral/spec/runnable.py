"""What every workload's spec shares about the process it runs, checked in one place.

JobSpec and EndpointSpec both carry command / entrypoint / args, env, secrets, files and
working_dir. An endpoint's `files` once went unchecked while a job's were, and one
workspace's bad endpoint then stopped the endpoint controller for all: one set of
validators, inherited by both, keeps them from drifting apart again.
"""

from __future__ import annotations

from pydantic import BaseModel, ValidationInfo, field_validator

from corral.spec.limits import (
    bounded,
    check_argv,
    check_command,
    check_env,
    check_files,
    check_selector,
)
from corral.spec.names import check_name
from corral.spec.volumes import check_volumes

MAX_SECRETS = 64


def check_secrets(value: dict[str, str]) -> dict[str, str]:
    """Environment variable -> the name of a workspace secret (`corral secret set`)."""
    if len(value) > MAX_SECRETS:
        raise ValueError(f"{len(value)} secrets; at most {MAX_SECRETS}")
    check_env(dict.fromkeys(value, ""))
    for key, name in value.items():
        check_name(name, f"secret name (for {key})")
    return value


def check_env_and_secrets(env: dict[str, str], secrets: dict[str, str]) -> None:
    both = sorted(set(env) & set(secrets))
    if both:
        raise ValueError(
            f"{both[0]} is in both `env` and `secrets`: give it one value, in one of them"
        )


def check_workdir_or_working_dir(workdir: str | None, working_dir: str | None) -> None:
    if workdir is not None and working_dir is not None:
        raise ValueError(
            "give one of `workdir` (a directory uploaded with the job) or `working_dir` "
            "(a directory already on the node), not both"
        )


class Runnable(BaseModel):
    """Validators only, each applied where a spec has its field; each spec declares the
    fields itself, with its own descriptions."""

    @field_validator("env", check_fields=False)
    @classmethod
    def _env(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        return check_env(value, bounded(info))

    @field_validator("secrets", check_fields=False)
    @classmethod
    def _secrets(cls, value: dict[str, str]) -> dict[str, str]:
        return check_secrets(value)

    @field_validator("workspace", check_fields=False)
    @classmethod
    def _workspace(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value, "workspace name")

    @field_validator("volumes", check_fields=False)
    @classmethod
    def _volumes(cls, value: dict[str, str]) -> dict[str, str]:
        return check_volumes(value)

    @field_validator("node_selector", check_fields=False)
    @classmethod
    def _selector(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        return check_selector(value, bounded(info))

    @field_validator("working_dir", check_fields=False)
    @classmethod
    def _working_dir(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("working_dir must be an absolute path on the node")
        return value

    @field_validator("files", check_fields=False)
    @classmethod
    def _files(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        return check_files(value, bounded(info))

    @field_validator("command", check_fields=False)
    @classmethod
    def _command(cls, value: str | None, info: ValidationInfo) -> str | None:
        return check_command(value, bounded(info))

    @field_validator("entrypoint", check_fields=False)
    @classmethod
    def _entrypoint(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        return None if value is None else check_argv(value, "entrypoint", bounded(info))

    @field_validator("args", check_fields=False)
    @classmethod
    def _args(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return check_argv(value, "args", bounded(info))
