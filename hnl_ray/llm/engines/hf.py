"""The `hf` engine: a transformers causal LM in a Ray Data actor pool (CPU or GPU).

Prompts are rendered with the model's chat template, left-padded and generated in batches; decoding is constrained
to the output JSON schema with xgrammar's logits processor, so even a 135M-parameter model returns parseable JSON.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from ...config.llm import LLMConfig
from ..models import resolve_llm
from .base import Engine, EngineError


class HFGenerator:
    """Callable class for `map_batches`: one model per actor, a batch of prompts per call."""

    def __init__(self, model_path: str, max_new_tokens: int, max_prompt_tokens: int, top_p: float,
                 structured: bool, schemas: dict[str, str], threads: int | None, device: str, dtype: str,
                 repetition_penalty: float = 1.0, decode: str = "pruned", quantize: str = "none"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads or os.cpu_count() or 1)  # Ray workers start with one thread
        self.torch = torch
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        self.tok = AutoTokenizer.from_pretrained(model_path)
        if not self.tok.chat_template:
            raise EngineError(f"{model_path} has no chat template; use an instruction-tuned model")
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(
            dtype, torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).to(self.device).eval()
        if quantize == "int8":
            if self.device.type != "cpu":
                raise EngineError("llm.quantize: int8 is the CPU path (torch dynamic quantization); use dtype on GPU")
            import warnings

            with warnings.catch_warnings():  # torch's deprecation notices of its own (still shipped) eager API
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
                self.model = torch.ao.quantization.quantize_dynamic(self.model, {torch.nn.Linear}, dtype=torch.qint8)
        self.decode = decode
        self.stats: dict[str, float] = {}  # seconds and counts of the own loop's parts (benchmarks read them)
        self.max_new_tokens, self.max_prompt_tokens, self.top_p = max_new_tokens, max_prompt_tokens, top_p
        self.structured, self.schemas = structured, schemas
        self.repetition_penalty = repetition_penalty
        self._grammars: dict[str, Any] = {}

    # -- prompt rendering with a token budget --------------------------------------------------------------
    def _render(self, system: str, prompt: str) -> tuple[str, int, bool]:
        def chat(user: str) -> str:
            return self.tok.apply_chat_template([{"role": "system", "content": system},
                                                 {"role": "user", "content": user}],
                                                tokenize=False, add_generation_prompt=True)

        text = chat(prompt)
        n = len(self.tok(text, add_special_tokens=False)["input_ids"])
        if n <= self.max_prompt_tokens:
            return text, n, False
        # Cut the user message (not the template around it) by tokens until the prompt fits.
        ids = self.tok(prompt, add_special_tokens=False)["input_ids"]
        keep = max(1, len(ids) - (n - self.max_prompt_tokens))
        text = chat(self.tok.decode(ids[:keep]))
        return text, len(self.tok(text, add_special_tokens=False)["input_ids"]), True

    def _with_shared_prefix(self, texts: list[str], systems) -> dict[str, Any]:
        """Generation inputs. When every row shares the system prompt, its tokens are run once and their KV
        cache is repeated for the batch (prefix caching): rows are laid out as [prefix][pads][rest], with the pads
        masked, so positions stay contiguous. Outputs equal plain left-padded generation; prefill is cheaper."""
        plain = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        system = str(systems[0])
        st = self.stats  # prompt tokens run through the model: real ones, and with the padding (benchmarks)

        def counted(real: int, padded: int):
            st["prefill_tokens"] = st.get("prefill_tokens", 0) + real
            st["prefill_padded_tokens"] = st.get("prefill_padded_tokens", 0) + padded

        if len(texts) < 2 or any(str(x) != system for x in systems):
            counted(int(plain["attention_mask"].sum()), plain["input_ids"].numel())
            return plain.to(self.device)
        marker = "\x00\x01user\x01\x00"
        tmpl = self.tok.apply_chat_template([{"role": "system", "content": system},
                                             {"role": "user", "content": marker}],
                                            tokenize=False, add_generation_prompt=True)
        prefix = self.tok(tmpl[: tmpl.index(marker)], add_special_tokens=False)["input_ids"]
        rows = [self.tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        if len(prefix) < 8 or any(r[: len(prefix)] != prefix for r in rows):
            counted(int(plain["attention_mask"].sum()), plain["input_ids"].numel())
            return plain.to(self.device)  # the tokenizer merges across the boundary: no safe split
        rest = [r[len(prefix):] for r in rows]
        width, pad, n = max(map(len, rest)), self.tok.pad_token_id, len(prefix)
        counted(n + sum(map(len, rest)), n + width * len(rest))
        ids = self.torch.tensor([prefix + [pad] * (width - len(r)) + r for r in rest], device=self.device)
        mask = self.torch.tensor([[1] * n + [0] * (width - len(r)) + [1] * len(r) for r in rest],
                                 device=self.device)
        with self.torch.no_grad():
            out = self.model(self.torch.tensor([prefix], device=self.device), use_cache=True)
        cache = getattr(out, "cache", None) or out.past_key_values
        cache.batch_repeat_interleave(len(rest))
        return {"input_ids": ids, "attention_mask": mask, "cache": cache}

    def _processor(self, kind: str):
        import xgrammar as xgr

        if kind not in self._grammars:
            info = xgr.TokenizerInfo.from_huggingface(self.tok, vocab_size=self.model.config.vocab_size)
            # Compact JSON only: free whitespace lets a weak model pad forever inside the object.
            self._grammars[kind] = xgr.GrammarCompiler(info).compile_json_schema(self.schemas[kind],
                                                                                 any_whitespace=False)
        return xgr.contrib.hf.LogitsProcessor(self._grammars[kind])

    def _pruned_generate(self, enc: dict[str, Any], kind: str | None, kwargs: dict[str, Any]) -> list[list[int]]:
        """Greedy or sampled decoding like `generate()` (same processors, same positions from the mask), but rows
        that have finished leave the batch: their cache rows are dropped, so later steps run only on the rows still
        writing. With length-varied answers this removes the steps `generate()` spends on padding."""
        import xgrammar as xgr
        from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                                  TopPLogitsWarper)

        torch = self.torch
        ids, mask = enc["input_ids"], enc["attention_mask"]
        cache = enc.get("cache")
        past = cache.get_seq_length() if cache is not None else 0
        pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
        procs = LogitsProcessorList()
        if self.repetition_penalty != 1.0:
            procs.append(RepetitionPenaltyLogitsProcessor(self.repetition_penalty))
        sample = kwargs.get("do_sample", False)
        if sample:
            procs += [TemperatureLogitsWarper(kwargs["temperature"]), TopPLogitsWarper(kwargs["top_p"])]
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos if eos is not None else self.tok.eos_token_id])
        n = ids.shape[0]
        matchers = [xgr.GrammarMatcher(self._grammars[kind]) for _ in range(n)] if kind else None
        vocab = self.model.config.vocab_size
        bitmask = xgr.allocate_token_bitmask(n, vocab) if kind else None
        alive = torch.arange(n, device=self.device)  # original row of each batch row
        out: list[list[int]] = [[] for _ in range(n)]
        seqs = ids  # what the repetition penalty looks at: prompt (pads included, as generate) + generated
        step_ids, step_pos = ids[:, past:], pos[:, past:]
        clock, st = time.perf_counter, self.stats
        for step in range(self.max_new_tokens):
            t0 = clock()
            res = self.model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos, cache=cache,
                             use_cache=True, logits_to_keep=1)
            cache = getattr(res, "cache", None) or res.past_key_values
            scores = res.logits[:, -1, :].float()
            t1 = clock()
            part = "prefill_s" if step == 0 else "decode_forward_s"
            st[part] = st.get(part, 0.0) + t1 - t0
            st["row_steps"] = st.get("row_steps", 0) + len(alive)
            if matchers is not None:
                rows = alive.tolist()
                for b, r in enumerate(rows):
                    matchers[r].fill_next_token_bitmask(bitmask, b)
                xgr.apply_token_bitmask_inplace(scores, bitmask[: len(rows)].to(scores.device))
            t2 = clock()
            st["grammar_s"] = st.get("grammar_s", 0.0) + t2 - t1
            scores = procs(seqs, scores)
            nxt = (torch.multinomial(scores.softmax(-1), 1).squeeze(1) if sample else scores.argmax(-1))
            done = []
            for b, (r, t) in enumerate(zip(alive.tolist(), nxt.tolist())):
                if t in eos:
                    done.append(b)
                    continue
                out[r].append(t)
                if matchers is not None:
                    matchers[r].accept_token(t)
                    if matchers[r].is_terminated():
                        done.append(b)
            seqs = torch.cat([seqs, nxt[:, None]], 1)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
            step_ids, step_pos = nxt[:, None], step_pos[:, -1:] + 1
            if done:
                keep = torch.tensor([b for b in range(len(alive)) if b not in set(done)], device=self.device)
                if len(keep) == 0:
                    break
                alive, seqs, mask = alive[keep], seqs[keep], mask[keep]
                step_ids, step_pos = step_ids[keep], step_pos[keep]
                cache.batch_select_indices(keep)
            st["loop_other_s"] = st.get("loop_other_s", 0.0) + clock() - t2  # processors, sampling, grammar advance
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["id"])
        out = {k: v for k, v in batch.items()}
        rendered = [self._render(s, p) for s, p in zip(batch["system"], batch["user"])]
        out["prompt_tokens"] = np.array([r[1] for r in rendered], dtype=np.int32)
        out["truncated"] = np.array([r[2] for r in rendered], dtype=bool)
        texts = np.full(n, None, dtype=object)
        errors = np.full(n, None, dtype=object)
        gen = np.zeros(n, dtype=np.int32)
        try:
            temperature = float(batch["temperature"][0])
            self.torch.manual_seed(int(batch["seed"][0]))
            kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "pad_token_id": self.tok.pad_token_id,
                                      "repetition_penalty": self.repetition_penalty}
            kwargs.update({"do_sample": True, "temperature": temperature, "top_p": self.top_p}
                          if temperature > 0 else {"do_sample": False})
            kind = str(batch["kind"][0]) if self.structured else None
            enc = self._with_shared_prefix([r[0] for r in rendered], batch["system"])
            special = {self.tok.pad_token_id, self.tok.eos_token_id}
            with self.torch.no_grad():
                if self.decode == "pruned":
                    if kind:
                        self._processor(kind)  # compiles the grammar once
                    new = self._pruned_generate(enc, kind, kwargs)
                else:
                    if kind:
                        kwargs["logits_processor"] = [self._processor(kind)]
                    seqs = self.model.generate(**enc, **kwargs)
                    new = seqs[:, enc["input_ids"].shape[1]:].cpu().tolist()
            for k in range(n):
                ids = [t for t in new[k] if t not in special]
                gen[k] = len(ids)
                texts[k] = self.tok.decode(ids, skip_special_tokens=True)
        except Exception as exc:  # continue on error: the rows carry the reason
            errors[:] = f"{type(exc).__name__}: {exc}"
        out.update(text=texts, error=errors, gen_tokens=gen)
        return out


class HFEngine(Engine):
    name = "hf"

    def __init__(self, cfg: LLMConfig, device: str = "auto"):
        self.cfg = cfg
        self.device = device
        self.model_path: str | None = None

    def check(self) -> None:
        if self.cfg.quantize == "int8" and self.cfg.num_gpus > 0:
            raise EngineError("llm.quantize: int8 is the CPU path (torch dynamic quantization); on GPU actors "
                              "(llm.num_gpus > 0) use llm.dtype")
        self.model_path = resolve_llm(self.cfg.model, self.cfg.model_cache)
        if self.cfg.num_gpus > 0:  # GPU nodes may not exist yet: ask the autoscaler (fails naming what is missing)
            from ...ray_utils import ensure_resources

            ensure_resources([{"GPU": self.cfg.num_gpus, "CPU": self.cfg.num_cpus}] * self.cfg.concurrency,
                             f"llm.engine hf (llm.num_gpus={self.cfg.num_gpus:g}, llm.concurrency="
                             f"{self.cfg.concurrency})")
        if self.cfg.structured:
            try:
                import xgrammar  # noqa: F401
            except ImportError as exc:
                raise EngineError("llm.structured needs the package xgrammar (pip install xgrammar), or set "
                                  "llm.structured: false") from exc

    def generate(self, ds):
        import ray

        from ..schemas import SCHEMAS, json_schema_str

        if self.model_path is None:
            self.check()
        c = self.cfg
        return ds.map_batches(
            HFGenerator,
            fn_constructor_kwargs=dict(model_path=self.model_path, max_new_tokens=c.max_new_tokens,
                                       max_prompt_tokens=c.max_prompt_tokens, top_p=c.top_p,
                                       structured=c.structured, schemas={k: json_schema_str(k) for k in SCHEMAS},
                                       threads=c.threads, device=self.device,  # auto: the actor's GPU when it has one
                                       dtype=c.dtype, repetition_penalty=c.repetition_penalty,
                                       quantize=c.quantize),
            batch_size=c.batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=c.concurrency),
            num_cpus=c.num_cpus, num_gpus=c.num_gpus or None,
        )

    def describe(self) -> dict:
        c = self.cfg
        return {"engine": "hf", "model": self.model_path, "max_new_tokens": c.max_new_tokens,
                "temperature": c.temperature, "retry_temperature": c.retry_temperature, "top_p": c.top_p,
                "repetition_penalty": c.repetition_penalty, "quantize": c.quantize,
                "structured": c.structured, "batch_size": c.batch_size}
