"""The SDK's calls about jobs: submit, list, get, cancel, logs, wait."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from corral.client.http import PAGE_ALL, Http
from corral.spec import JobSpec
from corral.wire.api import (
    TERMINAL_JOB_STATES,
    JobKind,
    JobList,
    JobLogs,
    JobView,
    LogPage,
)

# How long follow_logs keeps reading an attempt that has ended (the job finished or restarted)
# but whose log the server has not marked complete: the last chunks may still be on the way.
_LOG_GRACE_S = 3.0
# How often follow_logs asks whether the job has ended while no log arrives.
_JOB_CHECK_S = 2.0


class JobsApi(Http):
    # -- jobs ----------------------------------------------------------------------------

    def submit_job(self, spec: JobSpec) -> JobView:
        """Submit to `spec.workspace` when the spec names one, else to this client's."""
        path = f"{self._ws(spec.workspace)}/jobs"
        # The spec writes sizes as "NMi", so the server reads back exactly these MiB.
        return self._send(JobView, "POST", path, spec.model_dump(mode="json", exclude_none=True))

    def list_jobs(
        self, states: Iterable[str] = (), kind: JobKind = "all", limit: int | None = None
    ) -> list[JobView]:
        """The workspace's jobs, newest first: all of them, or the `limit` newest."""
        found: list[JobView] = []
        cursor: str | None = None
        while limit is None or len(found) < limit:
            # The server's own page size first (most lists fit); its largest after that.
            size = None if cursor is None else PAGE_ALL
            if limit is not None:
                size = min(size or PAGE_ALL, limit - len(found))
            page = self.jobs_page(states, kind, size, cursor)
            found.extend(page.jobs)
            cursor = page.next_cursor
            if cursor is None:
                break
        return found

    def jobs_page(
        self,
        states: Iterable[str] = (),
        kind: JobKind = "all",
        limit: int | None = None,
        cursor: str | None = None,
        *,
        all_workspaces: bool = False,
    ) -> JobList:
        """One page of jobs, newest first; pass its `next_cursor` back for the next.
        all_workspaces: every workspace's (a cluster admin's token), not this client's."""
        params: dict[str, Any] = {}
        chosen = list(states)
        if chosen:
            params["state"] = chosen
        if kind != "all":
            params["kind"] = kind
        if limit is not None:
            params["limit"] = limit
        if cursor:
            params["cursor"] = cursor
        path = "/v1/jobs" if all_workspaces else f"{self._ws()}/jobs"
        return self._get(JobList, path, params)

    def get_job(self, name: str) -> JobView:
        return self._get(JobView, self._job(name))

    def cancel_job(self, name: str) -> JobView:
        return self._send(JobView, "POST", f"{self._job(name)}/cancel", None)

    def delete_job(self, name: str) -> None:
        self._request("DELETE", self._job(name))

    def job_logs(
        self, name: str, replica: int = 0, offset: int = 0, attempt: int | None = None
    ) -> LogPage:
        """One page of a replica's log from byte `offset`; of the current attempt by default."""
        params: dict[str, Any] = {"replica": replica, "offset": offset}
        if attempt is not None:
            params["attempt"] = attempt
        return self._get(LogPage, f"{self._job(name)}/logs", params)

    def all_logs(
        self, name: str, offsets: list[int] | None = None, attempt: int | None = None
    ) -> JobLogs:
        """Every replica's log from `offsets` (by rank) and the job's state, in one request."""
        params: dict[str, Any] = {"offset": offsets or []}
        if attempt is not None:
            params["attempt"] = attempt
        return self._get(JobLogs, f"{self._job(name)}/logs/all", params)

    def follow_logs(self, name: str, replica: int = 0, poll_s: float = 0.25) -> Iterator[str]:
        """Yield a replica's log text as it is written, until the job has ended and all of
        its log is read. When the job restarts, goes on with the new attempt's log."""
        for page in self.follow_log_pages(name, replica, poll_s):
            if page.data:
                yield page.data

    def follow_log_pages(
        self, name: str, replica: int = 0, poll_s: float = 0.25
    ) -> Iterator[LogPage]:
        """Like `follow_logs`, but yields each LogPage that has data, so a caller sees
        `attempt` change. Each attempt is read to its end before the next one."""
        offset = 0
        attempt: int | None = None  # pinned once the job has started
        last_check = self._clock()
        waiting_since: float | None = None  # something follows, but this log is not complete
        while True:
            page = self.job_logs(name, replica, offset, attempt)
            if attempt is None and page.attempt >= 1:
                attempt = page.attempt
            offset = page.next_offset
            if page.data:
                yield page
                if not page.complete:
                    continue  # there may be more right away: read on without sleeping
            now = self._clock()
            if page.complete or waiting_since is not None or now - last_check >= _JOB_CHECK_S:
                last_check = now
                job = self.get_job(name)
                newer = attempt is not None and job.attempt > attempt
                if newer or job.state in TERMINAL_JOB_STATES:
                    if waiting_since is None:
                        waiting_since = now
                    if page.complete or now - waiting_since >= _LOG_GRACE_S:
                        if not newer:
                            return
                        # One attempt at a time: none of their logs is skipped.
                        attempt, offset, waiting_since = (attempt or 0) + 1, 0, None
                        continue
                else:
                    waiting_since = None
            self._sleep(poll_s)

    def wait_job(self, name: str, timeout: float | None = None, poll_s: float = 0.1) -> JobView:
        """Poll until the job is succeeded, failed or cancelled; TimeoutError after `timeout` s."""
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            job = self.get_job(name)
            if job.state in TERMINAL_JOB_STATES:
                return job
            if deadline is not None and self._clock() >= deadline:
                raise TimeoutError(
                    f"job {name!r} did not finish within {timeout:g} s (it is {job.state})"
                )
            self._sleep(poll_s)
