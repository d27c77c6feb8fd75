"""Spot interruption notices: the cloud says it takes this machine back in two minutes.

```
 every poll_s (5 s): IMDSv2 token (PUT /latest/api/token, kept until near its TTL)
   -> GET /latest/meta-data/spot/instance-action
        404: no notice (on-demand instances never get one)
        200 {"action": "terminate", "time": "2026-12-03T17:02:00Z"}: a notice
   -> POST <server>/v1/agent/interruption (node token), retried until the server answers
      -> the server drains the node (cordon, jobs requeued from their checkpoints,
         endpoint replicas replaced); the watcher stops
```

The metadata service is unreachable off EC2 (and in a container without the hop limit):
that is logged once and polling goes on quietly. `--interruption-notices aws` turns this on
(the aws provider's user data passes it); `base_url` is configurable for tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httpx

from corral.wire.agent import InterruptionAck, InterruptionNotice

log = logging.getLogger("corral.agent.interruption")

IMDS_URL = "http://169.254.169.254"
POLL_S = 5.0
TOKEN_TTL_S = 21600
HTTP_TIMEOUT_S = 2.0
TELL_FIRST_S = 0.5
TELL_MAX_S = 5.0


@dataclass(frozen=True)
class Notice:
    action: str
    at: float  # unix seconds


def parse_notice(body: bytes) -> Notice | None:
    """The instance-action document as a Notice; None when it cannot be read."""
    try:
        doc = json.loads(body)
        action = str(doc["action"])
        when = datetime.fromisoformat(str(doc["time"]).replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError):
        return None
    if when.tzinfo is None:
        return None
    return Notice(action=action[:32], at=when.timestamp())


class ImdsClient:
    """The instance metadata service, IMDSv2 (a session token on every read)."""

    def __init__(self, client: httpx.AsyncClient, base_url: str = IMDS_URL) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._token: str | None = None
        self._token_until = 0.0

    async def _session_token(self) -> str:
        if self._token is None or time.monotonic() >= self._token_until:
            response = await self._client.put(
                f"{self._base}/latest/api/token",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)},
            )
            response.raise_for_status()
            self._token = response.text.strip()
            self._token_until = time.monotonic() + TOKEN_TTL_S - 60
        return self._token

    async def instance_action(self) -> Notice | None:
        """The pending spot instance action, or None. Raises httpx.HTTPError."""
        token = await self._session_token()
        url = f"{self._base}/latest/meta-data/spot/instance-action"
        response = await self._client.get(url, headers={"X-aws-ec2-metadata-token": token})
        if response.status_code == 401:  # the token expired early: once more with a new one
            self._token = None
            token = await self._session_token()
            response = await self._client.get(url, headers={"X-aws-ec2-metadata-token": token})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        notice = parse_notice(response.content)
        if notice is None:
            log.warning("unreadable spot instance-action from %s: %r", url, response.text[:200])
        return notice


class InterruptionWatcher:
    """Polls for a notice and tells the control plane once. `node_token` is read when
    needed (the agent may register, or register again, after the watcher started)."""

    def __init__(
        self,
        server: str,
        node_token: Callable[[], str | None],
        base_url: str = IMDS_URL,
        poll_s: float = POLL_S,
        transport: httpx.AsyncBaseTransport | None = None,  # tests: httpx.MockTransport
    ) -> None:
        self._transport = transport
        self._server = server.rstrip("/")
        self._node_token = node_token
        self._base_url = base_url
        self._poll_s = poll_s
        self.told: Notice | None = None  # the notice the server took

    async def run(self) -> Notice:
        """Return once the server took a notice (the machine is going; nothing more to
        watch)."""
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, transport=self._transport) as client:
            notice = await self._wait_for_notice(ImdsClient(client, self._base_url))
            log.warning(
                "spot interruption notice: the instance will %s at %s",
                notice.action,
                datetime.fromtimestamp(notice.at).astimezone().isoformat(timespec="seconds"),
            )
            await self._tell(client, notice)
        self.told = notice
        return notice

    async def _wait_for_notice(self, imds: ImdsClient) -> Notice:
        quiet = False
        while True:
            try:
                notice = await imds.instance_action()
            except httpx.HTTPError as exc:
                if not quiet:
                    log.warning(
                        "cannot read spot notices from %s (%s); still trying every %.0f s",
                        self._base_url,
                        str(exc) or type(exc).__name__,
                        self._poll_s,
                    )
                    quiet = True
            else:
                if notice is not None:
                    return notice
            await asyncio.sleep(self._poll_s)

    async def _tell(self, client: httpx.AsyncClient, notice: Notice) -> None:
        body = InterruptionNotice(action=notice.action, at=notice.at).model_dump(mode="json")
        delay = TELL_FIRST_S
        while True:
            token = self._node_token()
            why: str
            if token is None:
                why = "the node has not registered yet"
            else:
                try:
                    response = await client.post(
                        f"{self._server}/v1/agent/interruption",
                        json=body,
                        headers={"Authorization": f"Bearer {token}"},
                    )
                except httpx.HTTPError as exc:
                    why = f"cannot reach {self._server} ({str(exc) or type(exc).__name__})"
                else:
                    if response.status_code == 200:
                        ack = InterruptionAck.model_validate_json(response.content)
                        log.warning("control plane told: %s", ack.outcome)
                        return
                    why = f"{self._server} answered HTTP {response.status_code}"
            log.warning("spot interruption not told yet: %s; again in %.1f s", why, delay)
            await asyncio.sleep(delay)
            delay = min(TELL_MAX_S, delay * 2)
