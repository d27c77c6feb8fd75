"""A mock OpenAI-style model server, run as its own process (`python mock_openai.py ...`).

Real HTTP (uvicorn + httptools), with the knobs an inference test needs:
  --startup-delay S   sleep before listening (a model loading); /health answers only after
  --delay S           per-request delay before the first byte
  --chunk-interval S  time between SSE chunks of a streamed answer
  --chunks N          chunks in a streamed answer (overridable by the request's max_tokens)
  --events FILE       append one JSON line per request event: recv, done, cancel (flushed
                      at once, so a test can tell after a kill which requests arrived)
Per request, headers override: x-mock-delay, x-mock-chunks, x-mock-interval.
Each request is identified by its `x-request-id` header (or a counter).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Mock:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.replica = args.replica_id
        self.counter = itertools.count(1)
        self.events = open(args.events, "a", buffering=1) if args.events else None  # noqa: SIM115

    def event(self, kind: str, rid: str, **extra: object) -> None:
        if self.events is not None:
            record = {"event": kind, "id": rid, "t": time.time(), "replica": self.replica}
            self.events.write(json.dumps({**record, **extra}) + "\n")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert scope["type"] == "http"
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        rid = headers.get("x-request-id") or f"auto-{next(self.counter)}"
        path, method = scope["path"], scope["method"]
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.event("cancel", rid, path=path)
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.event("recv", rid, path=path, forwarded_for=headers.get("x-forwarded-for"))
        if path == "/health" and method == "GET":
            await _json(send, 200, {"status": "ok", "replica": self.replica})
            return
        if path == "/v1/models" and method == "GET":
            models = {"object": "list", "data": [{"id": "mock", "object": "model"}]}
            await _json(send, 200, models)
            return
        if path == "/echo":
            await _json(send, 200, {"body": body.decode(), "headers": headers, "rid": rid})
            return
        if method != "POST" or path not in (
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/embeddings",
        ):
            await _json(send, 404, {"error": {"message": f"no route {method} {path}"}})
            return
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            await _json(send, 400, {"error": {"message": "body is not JSON"}})
            return
        delay = float(headers.get("x-mock-delay", self.args.delay))
        if delay > 0 and await _sleep_or_disconnect(delay, receive):
            self.event("cancel", rid, path=path)
            return
        if path == "/v1/embeddings":
            await _json(send, 200, _embeddings(request))
            self.event("done", rid)
            return
        chat = path == "/v1/chat/completions"
        chunks = int(headers.get("x-mock-chunks", request.get("max_tokens", self.args.chunks)))
        if not request.get("stream"):
            text = " ".join(f"tok{i}" for i in range(chunks))
            await _json(send, 200, _completion(chat, rid, text, self.replica))
            self.event("done", rid)
            return
        interval = float(headers.get("x-mock-interval", self.args.chunk_interval))
        cancelled = await self.stream(send, receive, chat, rid, chunks, interval)
        self.event("cancel" if cancelled else "done", rid, chunks=chunks)

    async def stream(
        self, send: Send, receive: Receive, chat: bool, rid: str, chunks: int, interval: float
    ) -> bool:
        """Send `chunks` SSE events `interval` apart; True if the client went away first."""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                    (b"x-mock-replica", self.replica.encode()),
                ],
            }
        )
        gone = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            for i in range(chunks):
                if i and interval > 0:
                    await asyncio.wait({gone}, timeout=interval)
                if gone.done():
                    return True
                piece = _chunk(chat, rid, f"tok{i} ", i, self.replica)
                data = f"data: {json.dumps(piece)}\n\n".encode()
                await send({"type": "http.response.body", "body": data, "more_body": True})
            if gone.done():
                return True
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
            return False
        finally:
            gone.cancel()


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _sleep_or_disconnect(delay: float, receive: Receive) -> bool:
    gone = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        await asyncio.wait({gone}, timeout=delay)
        return gone.done()
    finally:
        gone.cancel()


async def _json(send: Send, status: int, payload: object) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _completion(chat: bool, rid: str, text: str, replica: str) -> dict[str, object]:
    choice: dict[str, object] = {"index": 0, "finish_reason": "stop"}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": rid,
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": "mock",
        "choices": [choice],
        "replica": replica,
    }


def _chunk(chat: bool, rid: str, text: str, i: int, replica: str) -> dict[str, object]:
    choice: dict[str, object] = {"index": 0, "finish_reason": None}
    if chat:
        choice["delta"] = {"content": text}
    else:
        choice["text"] = text
    return {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "model": "mock",
        "seq": i,
        "sent_at": time.time(),
        "replica": replica,
        "choices": [choice],
    }


def _embeddings(request: dict[str, Any]) -> dict[str, object]:
    inputs = request.get("input", "")
    texts = [inputs] if isinstance(inputs, str) else list(inputs)
    data = []
    for i, text in enumerate(texts):
        digest = hashlib.sha256(str(text).encode()).digest()
        data.append({"object": "embedding", "index": i, "embedding": [b / 255 for b in digest[:8]]})
    return {"object": "list", "data": data, "model": "mock", "usage": {"prompt_tokens": 0}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--replica-id", default=f"mock-{os.getpid()}")
    parser.add_argument("--startup-delay", type=float, default=0.0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--chunk-interval", type=float, default=0.01)
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--events")
    args = parser.parse_args(argv)
    if args.startup_delay > 0:
        time.sleep(args.startup_delay)  # loading a model, as far as anyone outside can tell
    import uvicorn

    uvicorn.run(
        Mock(args),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_keep_alive=30,
    )


if __name__ == "__main__":
    sys.exit(main())
