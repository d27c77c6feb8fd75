"""The embeddings example, run as `python -m corral.serve`, answers like OpenAI's API."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from support.cluster import free_port, wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "embeddings"


@pytest.fixture(scope="module")
def embeddings_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("embeddings") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # it must not need the network
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "corral.serve", "app.py:Embedder", "--port", str(port)],
            cwd=EXAMPLE,
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            "the embedding service ready",
            lambda: proc.poll() is None and httpx.get(f"{url}/health").status_code == 200,
            timeout=60,
        )
        yield url
    except AssertionError:
        raise AssertionError(log.read_text()[-3000:]) from None
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)


def test_embeddings_are_384_dimension_unit_vectors(embeddings_url: str) -> None:
    texts = ["A cat sits on the mat.", "A cat is sitting on a mat.", "Stock markets fell today."]
    r = httpx.post(
        f"{embeddings_url}/v1/embeddings",
        json={"input": texts, "model": "all-MiniLM-L6-v2"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "all-MiniLM-L6-v2"
    vectors = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    same, different = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert same > 0.8 and different < 0.3, (same, different)
    assert body["usage"]["prompt_tokens"] > 3


def test_base64_encoding_as_the_openai_client_asks(embeddings_url: str) -> None:
    r = httpx.post(
        f"{embeddings_url}/v1/embeddings",
        json={"input": "hello", "encoding_format": "base64"},
        timeout=30,
    )
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    vector = np.frombuffer(raw, dtype="<f4")
    assert vector.shape == (384,) and abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4
    models = httpx.get(f"{embeddings_url}/v1/models").json()
    assert models["data"][0]["id"] == "all-MiniLM-L6-v2"
