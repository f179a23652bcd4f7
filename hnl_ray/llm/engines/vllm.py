"""The `vllm` engine: Ray's `ray.data.llm` vLLM processor on GPU actors (install the `gpu` extra).

vLLM is imported by Ray inside the GPU actors only; this module builds the processor config and the pre/post
processing, which import and run without vLLM (and are tested on CPU). On a cluster without GPUs it fails at
once: a vLLM actor would otherwise wait for a GPU forever.
"""

from __future__ import annotations

from ...config.llm import LLMConfig
from ..schemas import json_schema
from .base import Engine, EngineError


def engine_kwargs(cfg: LLMConfig) -> dict:
    v = cfg.vllm
    return {"max_model_len": v.max_model_len, "gpu_memory_utilization": v.gpu_memory_utilization,
            "tensor_parallel_size": v.tensor_parallel_size, "enable_prefix_caching": v.enable_prefix_caching,
            **v.engine_kwargs}


def processor_config(cfg: LLMConfig):
    from ray.data.llm import vLLMEngineProcessorConfig

    if cfg.model is None:
        raise EngineError("llm.model must name a model (local folder or hub id) for the vllm engine")
    v = cfg.vllm
    return vLLMEngineProcessorConfig(model_source=cfg.model, engine_kwargs=engine_kwargs(cfg),
                                     concurrency=v.concurrency, batch_size=v.batch_size,
                                     accelerator_type=v.accelerator_type, should_continue_on_error=True)


def preprocess(row: dict, cfg: LLMConfig) -> dict:
    params = {"temperature": float(row["temperature"]), "top_p": cfg.top_p, "max_tokens": cfg.max_new_tokens,
              "seed": int(row["seed"]), "repetition_penalty": cfg.repetition_penalty}
    if cfg.structured:
        params["structured_outputs"] = {"json": json_schema(row["kind"])}
    return {**row, "messages": [{"role": "system", "content": row["system"]},
                                {"role": "user", "content": row["user"]}], "sampling_params": params}


_ENGINE_COLUMNS = ("messages", "sampling_params", "generated_text", "generated_tokens", "num_generated_tokens",
                   "num_input_tokens", "prompt", "prompt_token_ids", "tokenized_prompt", "request_id",
                   "metrics", "time_taken_llm", "params", "embeddings", "__inference_error__")


def postprocess(row: dict) -> dict:
    keep = {k: v for k, v in row.items() if k not in _ENGINE_COLUMNS}
    err = row.get("__inference_error__") or None
    return {**keep, "text": None if err else row.get("generated_text"), "error": err,
            "gen_tokens": int(row.get("num_generated_tokens") or 0),
            "prompt_tokens": int(row.get("num_input_tokens") or 0), "truncated": False}


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(self, cfg: LLMConfig):
        self.cfg = cfg

    def check(self) -> None:
        import ray

        need = self.cfg.vllm.tensor_parallel_size
        have = ray.cluster_resources().get("GPU", 0)
        if have < need:
            raise EngineError(f"llm.engine is vllm but the Ray cluster has {have:g} GPUs (each engine needs {need}); "
                              "a vLLM actor would wait for a GPU forever. Use llm.engine: hf or http on CPU.")
        processor_config(self.cfg)

    def generate(self, ds):
        from ray.data.llm import build_processor

        c = self.cfg
        proc = build_processor(processor_config(c), preprocess=lambda r: preprocess(r, c), postprocess=postprocess)
        return proc(ds)

    def describe(self) -> dict:
        c = self.cfg
        return {"engine": "vllm", "model": c.model, "engine_kwargs": engine_kwargs(c),
                "max_new_tokens": c.max_new_tokens, "temperature": c.temperature, "structured": c.structured}
