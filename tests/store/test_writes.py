"""Group commit: writes that arrive together share a transaction; one failing write loses
only itself."""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.server.errors import Conflict
from corral.server.services import jobs
from corral.server.services.identity import DEFAULT_WORKSPACE, workspace_by_name
from corral.server.store.db import Store
from corral.server.store.tables import Job, Workspace
from corral.server.writes import GroupCommit
from corral.spec import parse_job_spec


def _add(name: str, fail: bool = False):  # type: ignore[no-untyped-def]
    def write(session: Session) -> str:
        session.add(Workspace(id=f"id-{name}", name=name, created_at=1.0))
        session.flush()
        if fail:
            raise ValueError(f"{name} refused")
        return name

    return write


def _names(store: Store) -> set[str]:
    with store.read() as session:
        return set(session.scalars(select(Workspace.name)))


def test_writes_arriving_together_share_one_transaction(store: Store) -> None:
    writes = GroupCommit(store)

    async def main() -> list[str]:
        return await asyncio.gather(*(writes.run(_add(f"ws{i}")) for i in range(50)))

    assert asyncio.run(main()) == [f"ws{i}" for i in range(50)]
    assert writes.writes == 50
    assert writes.batches < 50  # they were grouped (all 50 queued before the first ran)
    assert {f"ws{i}" for i in range(50)} <= _names(store)


def test_a_failing_write_loses_only_itself(store: Store) -> None:
    writes = GroupCommit(store)

    async def main() -> list[object]:
        return await asyncio.gather(
            writes.run(_add("a")),
            writes.run(_add("b", fail=True)),
            writes.run(_add("a")),  # the same name again: the unique constraint refuses it
            writes.run(_add("c")),
            return_exceptions=True,
        )

    a, b, a_again, c = asyncio.run(main())
    assert (a, c) == ("a", "c")
    assert isinstance(b, ValueError) and str(b) == "b refused"
    assert isinstance(a_again, Exception)  # IntegrityError, from its own savepoint
    names = _names(store)
    assert {"a", "c"} <= names and "b" not in names


def test_a_batch_warms_up_once_with_every_writes_key(store: Store) -> None:
    writes = GroupCommit(store)
    calls: list[list[str]] = []

    def warm(session: Session, keys: list[str]) -> None:
        calls.append(sorted(keys))

    async def main() -> list[str]:
        return await asyncio.gather(
            *(writes.run(_add(f"w{i}"), warm=(warm, f"w{i}")) for i in range(5))
        )

    assert asyncio.run(main()) == [f"w{i}" for i in range(5)]
    assert calls == [[f"w{i}" for i in range(5)]]


def test_two_submissions_of_one_name_in_one_batch_give_one_job_and_one_conflict(
    store: Store,
) -> None:
    with store.read() as session:
        ws = workspace_by_name(session, DEFAULT_WORKSPACE)
        assert ws is not None
        session.expunge(ws)
    writes = GroupCommit(store)
    spec = parse_job_spec({"name": "same", "command": "true"})

    def submit(session: Session) -> str:
        return jobs.submit_job(session, ws, spec, 2.0, flush=False).name

    async def main() -> list[object]:
        return await asyncio.gather(writes.run(submit), writes.run(submit), return_exceptions=True)

    first, second = asyncio.run(main())
    assert first == "same"
    assert isinstance(second, Conflict)
    with store.read() as session:
        assert session.scalars(select(Job.name).where(Job.name == "same")).all() == ["same"]
