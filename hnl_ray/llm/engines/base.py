"""The engine interface: a Ray Dataset of prompt rows in, the same rows plus the generated text out.

Input columns: `id`, `kind` (the output schema), `system`, `user`, `temperature`, `seed`, plus any key columns
(they pass through). Output adds: `text` (the raw reply, null on error), `error` (null on success),
`prompt_tokens`, `gen_tokens`, `truncated` (the prompt was cut to fit), optionally `finish_reason` (`length`: the
reply stopped at the token limit; engines without it are judged by `gen_tokens >= max_new_tokens`).
"""

from __future__ import annotations

from typing import Any

from ...errors import HnlRayError

OUTPUT_COLUMNS = ("text", "error", "prompt_tokens", "gen_tokens", "truncated")


class EngineError(HnlRayError, RuntimeError):
    """An engine cannot run at all (no GPU for vllm, endpoint unreachable, model missing)."""


class Engine:
    name = "base"

    def check(self) -> None:
        """Fail fast, before any Ray Data work starts."""

    def generate(self, ds: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict:
        """What the manifest records about the engine (model, sampling)."""
        return {"engine": self.name}

    def block_rows(self, cfg) -> int:
        """Rows per input block: at least a batch (a model generates a batch together), at least a shard."""
        return max(cfg.shard_rows, cfg.batch_size)


def build_engine(cfg, kinds: tuple[str, ...] = ()) -> Engine:
    """The engine the config names (`llm.engine`)."""
    if cfg.engine == "hf":
        from .hf import HFEngine

        return HFEngine(cfg)
    if cfg.engine == "http":
        from .http import HTTPEngine

        return HTTPEngine(cfg)
    from .vllm import VLLMEngine

    return VLLMEngine(cfg)
