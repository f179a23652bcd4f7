"""The `vllm` engine: Ray's `ray.data.llm` vLLM processor on GPU actors (install the `gpu` extra).

vLLM is imported by Ray inside the GPU actors only; this module builds the processor config and the pre/post
processing, which import and run without vLLM (and are tested on CPU with the processor stubbed).

Three things Ray 2.60's processor does that shape this module:
* With `should_continue_on_error`, a row whose inference failed **bypasses the user postprocess** and comes out
  as the raw stage row with `__inference_error__` set. So the processor gets no postprocess here: `finish` runs
  after it, on every row, and turns both kinds into the engine's output columns (an error row keeps its reason).
* vLLM refuses a prompt longer than `max_model_len` (an error row). `preprocess` cuts the user message to fit
  `max_model_len - max_new_tokens` with the model's own tokenizer and chat template, and marks the row
  `truncated`.
* An int `concurrency` n is an autoscaling pool of 1..n engine replicas; `[m, n]` sets both ends.
"""

from __future__ import annotations

import functools

from ...config.llm import LLMConfig
from ..schemas import json_schema
from .base import Engine, EngineError

# Tokens kept free besides max_new_tokens: the chat template's generation prompt may add a few after rendering.
PROMPT_MARGIN = 8


def engine_kwargs(cfg: LLMConfig) -> dict:
    v = cfg.vllm
    return {"max_model_len": v.max_model_len, "gpu_memory_utilization": v.gpu_memory_utilization,
            "tensor_parallel_size": v.tensor_parallel_size, "enable_prefix_caching": v.enable_prefix_caching,
            **v.engine_kwargs}


def concurrency(cfg: LLMConfig) -> int | tuple[int, int]:
    c = cfg.vllm.concurrency
    return tuple(c) if isinstance(c, (list, tuple)) else c


def processor_config(cfg: LLMConfig, model_source: str | None = None):
    from ray.data.llm import vLLMEngineProcessorConfig

    if cfg.model is None:
        raise EngineError("llm.model must name a model (local folder, hub id or s3:// folder) for the vllm engine")
    v = cfg.vllm
    return vLLMEngineProcessorConfig(model_source=model_source or cfg.model, engine_kwargs=engine_kwargs(cfg),
                                     concurrency=concurrency(cfg), batch_size=v.batch_size,
                                     accelerator_type=v.accelerator_type, should_continue_on_error=True)


def prompt_budget(cfg: LLMConfig) -> int:
    """Prompt tokens that fit: vLLM counts prompt + generated tokens against max_model_len."""
    budget = cfg.vllm.max_model_len - cfg.max_new_tokens - PROMPT_MARGIN
    if budget < 32:
        raise EngineError(f"llm.vllm.max_model_len ({cfg.vllm.max_model_len}) leaves {budget} prompt tokens after "
                          f"llm.max_new_tokens ({cfg.max_new_tokens}): raise max_model_len")
    return budget


def fit_prompt(system: str, user: str, tokenizer, budget: int) -> tuple[list[dict], int, bool]:
    """The chat messages, the prompt's token count and whether the user message was cut so that the rendered
    prompt fits `budget` tokens. The system message (the instructions) is never cut."""

    def messages(u: str) -> list[dict]:
        return [{"role": "system", "content": system}, {"role": "user", "content": u}]

    def count(u: str) -> int:
        text = tokenizer.apply_chat_template(messages(u), tokenize=False, add_generation_prompt=True)
        return len(tokenizer.encode(text, add_special_tokens=False))

    n = count(user)
    if n <= budget:
        return messages(user), n, False
    ids = tokenizer.encode(user, add_special_tokens=False)
    keep = max(0, len(ids) - (n - budget))
    cut = tokenizer.decode(ids[:keep])
    while keep > 0 and count(cut) > budget:  # re-tokenising across the cut can add a token or two
        keep -= max(1, (count(cut) - budget))
        cut = tokenizer.decode(ids[:keep])
    if count(cut) > budget:
        raise EngineError(f"the system prompt alone needs more than {budget} tokens: raise llm.vllm.max_model_len")
    return messages(cut), count(cut), True


@functools.lru_cache(maxsize=2)
def _tokenizer(model_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


def preprocess(row: dict, cfg: LLMConfig, tokenizer_path: str | None = None, tokenizer=None) -> dict:
    params = {"temperature": float(row["temperature"]), "top_p": cfg.top_p, "max_tokens": cfg.max_new_tokens,
              "seed": int(row["seed"]), "repetition_penalty": cfg.repetition_penalty}
    if cfg.structured:
        params["structured_outputs"] = {"json": json_schema(row["kind"])}
    tok = tokenizer if tokenizer is not None else _tokenizer(tokenizer_path or cfg.model)
    messages, n, cut = fit_prompt(row["system"], row["user"], tok, prompt_budget(cfg))
    return {**row, "messages": messages, "sampling_params": params, "truncated": cut, "prompt_tokens": n}


_ENGINE_COLUMNS = ("messages", "sampling_params", "generated_text", "generated_tokens", "num_generated_tokens",
                   "num_input_tokens", "prompt", "prompt_token_ids", "tokenized_prompt", "request_id",
                   "metrics", "time_taken_llm", "params", "embeddings", "__inference_error__", "batch_uuid",
                   "__idx_in_batch", "image", "logprobs", "prompt_tokens", "truncated")


def finish(row: dict) -> dict:
    """A processor output row (a success, or an error row that bypassed postprocess) -> the engine's columns."""
    keep = {k: v for k, v in row.items() if k not in _ENGINE_COLUMNS}
    err = row.get("__inference_error__") or None
    return {**keep, "text": None if err else row.get("generated_text"), "error": err,
            "gen_tokens": 0 if err else int(row.get("num_generated_tokens") or 0),
            "prompt_tokens": int(row.get("num_input_tokens") or row.get("prompt_tokens") or 0),
            "truncated": bool(row.get("truncated", False))}


postprocess = finish  # the name earlier callers used


class VLLMEngine(Engine):
    """Builds the processor once: every retry round reuses it (its config, pre- and postprocess). Ray Data still
    starts the engine actors per execution of a dataset, i.e. once per retry round that has rows left."""

    name = "vllm"

    def __init__(self, cfg: LLMConfig):
        self.cfg = cfg
        self._processor = None

    def check(self) -> None:
        from ...ray_utils import accelerator_bundle, ensure_resources

        v = self.cfg.vllm
        processor_config(self.cfg)
        prompt_budget(self.cfg)
        ensure_resources([accelerator_bundle({"GPU": 1}, v.accelerator_type)] * v.tensor_parallel_size,
                         f"llm.engine vllm (llm.vllm.tensor_parallel_size={v.tensor_parallel_size}"
                         + (f", llm.vllm.accelerator_type={v.accelerator_type}" if v.accelerator_type else "") + ")")

    def processor(self):
        if self._processor is None:
            from ray.data.llm import build_processor

            from ..models import resolve_llm_tokenizer

            c = self.cfg
            tok_path = resolve_llm_tokenizer(c.model, c.model_cache)
            self._processor = build_processor(processor_config(c),
                                              preprocess=lambda r: preprocess(r, c, tok_path))
        return self._processor

    def generate(self, ds):
        return self.processor()(ds).map(finish)

    def describe(self) -> dict:
        c = self.cfg
        return {"engine": "vllm", "model": c.model, "engine_kwargs": engine_kwargs(c),
                "max_new_tokens": c.max_new_tokens, "temperature": c.temperature, "structured": c.structured,
                "concurrency": concurrency(c)}
