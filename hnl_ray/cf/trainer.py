"""The CF trainer: Adam over (user, positive, negatives) batches, validation every N epochs with early stopping,
one test evaluation of the chosen epoch, resumable checkpoints, a JSONL log, a learning curve and metrics.json.

Test metrics are never used to choose anything: the best epoch is the best validation epoch.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from ..config.cf import TrainConfig
from ..errors import HnlRayError
from ..storage import RunDir
from . import checkpoint, losses
from .data import CFData
from .evaluate import EvalResult, Evaluator
from .models import CFModel, Embeddings, build_model
from .plots import learning_curve
from .samplers import Negatives, Sampler, build_sampler

log = logging.getLogger(__name__)


class TrainingError(HnlRayError, RuntimeError):
    pass


# What one run writes into its folder; a run is complete when all of RUN_FILES exist.
CHECKPOINT, BEST, METRICS = "checkpoint", "best.safetensors", "metrics.json"
RUN_FILES = [METRICS, "log.jsonl", "learning_curve.png", "per_user_test.parquet", "ranks_test.parquet", BEST]


@dataclass
class StepContext:
    """What an extra loss term sees at each step (the hook of later issues, e.g. a contrastive term)."""

    users: np.ndarray
    pos: np.ndarray
    emb: Embeddings
    negs: Negatives
    user_vec: torch.Tensor
    pos_vec: torch.Tensor
    neg_vec: torch.Tensor
    epoch: int
    model: CFModel


ExtraLoss = Callable[[StepContext], tuple[str, torch.Tensor]]


def _adam(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Adam; the fused kernel when available (one pass over the parameters: ~3x faster per step on CPU for
    embedding tables, where the update, not the model, dominates MF's step)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device: cuda was asked for, but torch sees no CUDA device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    def __init__(self, cfg: TrainConfig, data: CFData, out: RunDir, name: str, seed: int,
                 extra_losses: list[ExtraLoss] | None = None,
                 sampler_factory: Callable[[Sampler], Sampler] | None = None,
                 extra_modules: list[torch.nn.Module] | None = None, progress: bool = True,
                 epoch_hooks: list[Callable[[int], None]] | None = None):
        # `out` is this run's own folder (the train stage gives it <run-dir>/cf/<name>/): RUN_FILES go there.
        self.cfg, self.data, self.out, self.name, self.seed = cfg, data, out, name, seed
        self.device = pick_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.model = build_model(cfg.model, data.n_users, data.n_items, *data.train).to(self.device)
        self.extra_modules = torch.nn.ModuleList(extra_modules or []).to(self.device)
        # One module holding everything trained (CF model + e.g. a semantic adapter): optimised, checkpointed
        # and restored together.
        self.net = torch.nn.ModuleDict({"model": self.model, "extra": self.extra_modules})
        self.opt = _adam(list(self.net.parameters()), cfg.optim.lr)
        sampler = build_sampler(cfg.sampler, data, self.rng)
        self.sampler = sampler_factory(sampler) if sampler_factory else sampler
        self.extra_losses = list(extra_losses or [])
        self.valid_eval = Evaluator(data, "valid", cfg.eval.ks, cfg.eval.batch_users, self.device)
        self.test_eval = Evaluator(data, "test", cfg.eval.ks, cfg.eval.batch_users, self.device)
        if len(self.valid_eval.users) == 0:
            raise TrainingError("the validation split is empty: early stopping needs validation interactions "
                                "(see split.* in the config)")
        self.progress = progress
        self.epoch_hooks: list[Callable[[int], None]] = list(epoch_hooks or [])
        self._tu = data.train[0]
        self._ti = data.train[1]

    # ------------------------------------------------------------------ one step
    def _step(self, users: np.ndarray, pos: np.ndarray, epoch: int, batch: int,
              negs: Negatives | None = None) -> dict[str, float]:
        emb = self.model(layers=self.sampler.needs_layers)
        if negs is None:
            negs = self.sampler.sample(users, pos, emb, self.model)
        b = len(users)
        u_t = torch.from_numpy(users).to(self.device)
        p_t = torch.from_numpy(pos).to(self.device)
        # One gather per table (each index op's backward fills a whole table-sized gradient).
        if negs.emb is not None:
            u, p = emb.gather(u_t, p_t)
            n = negs.emb.to(self.device)
            item_ids = p_t
        else:
            item_ids = torch.cat([p_t, negs.items.to(self.device).reshape(-1)])
            u, rows = emb.gather(u_t, item_ids)
            p, n = rows[:b], rows[b:].view(b, -1, rows.shape[-1])
        s_pos = (u * p).sum(-1)
        s_neg = torch.einsum("bd,bnd->bn", u, n)
        main = losses.pairwise(self.cfg.loss.name, s_pos, s_neg, self.cfg.loss.margin)
        if self.model.final_is_ego:  # MF: the gathered rows are the ego embeddings
            ego_rows = [u, p, n if negs.emb is None else negs.ego.to(self.device)]
        else:
            ego_u, ego_i = self.model.ego()
            ego_rows = [ego_u[u_t], ego_i[item_ids]]
            if negs.emb is not None:
                ego_rows.append(negs.ego.to(self.device))
        reg = self.cfg.loss.reg * losses.l2(*ego_rows, batch_size=b)
        parts = {"main": main, "reg": reg}
        ctx = StepContext(users, pos, emb, negs, u, p, n, epoch, self.model)
        for hook in self.extra_losses:
            key, val = hook(ctx)
            parts[key] = val
        loss = sum(parts.values())
        if not torch.isfinite(loss):
            raise TrainingError(f"loss is {loss.item()} at epoch {epoch}, batch {batch} "
                                f"(parts: {', '.join(f'{k}={v.item():.4g}' for k, v in parts.items())}); "
                                "lower train.optim.lr or check the inputs")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {k: float(v.detach()) for k, v in parts.items()}

    def _epoch(self, epoch: int) -> dict:
        bs = self.cfg.optim.batch_size
        perm = self.rng.permutation(self.data.n_train)
        sums: dict[str, float] = {}
        n_batches = 0
        self.model.train()
        t0 = time.perf_counter()
        # Samplers that do not look at the model draw the whole epoch's negatives in one vectorised call.
        pre = None if self.sampler.needs_model else self.sampler.sample(self._tu[perm], self._ti[perm]).items
        for b, start in enumerate(range(0, len(perm), bs)):
            idx = perm[start: start + bs]
            negs = None if pre is None else Negatives(items=pre[start: start + bs])
            parts = self._step(self._tu[idx], self._ti[idx], epoch, b, negs)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            n_batches += 1
        out = {k: v / n_batches for k, v in sums.items()}
        out["loss"] = sum(out.values())
        out["train_s"] = time.perf_counter() - t0
        stats = getattr(self.sampler, "stats", None)
        if stats is not None:  # e.g. the hnlmrec sampler's guard: the share of candidates it rejected
            out["sampler"] = stats()
        return out

    @torch.no_grad()
    def embeddings(self) -> Embeddings:
        self.model.eval()
        emb = self.model()
        self.model.train()
        return emb

    def evaluate(self, split: str = "valid") -> EvalResult:
        emb = self.embeddings()
        ev = self.valid_eval if split == "valid" else self.test_eval
        return ev.evaluate(emb.users, emb.items)

    # ------------------------------------------------------------------ the loop
    def fit(self, stop_after_epoch: int | None = None, on_eval: Callable[[int, dict, str], None] | None = None,
            evaluate_test: bool = True) -> dict:
        """Train to early stopping (or `optim.epochs`), then test the chosen epoch once. `stop_after_epoch`
        ends the call early without finishing (used to test resuming). `on_eval(epoch, valid_metrics,
        checkpoint_folder)` follows each validation (Ray Tune reports through it); `evaluate_test=False` never
        touches the test split (sweep trials)."""
        cfg = self.cfg
        metric = cfg.eval.metric
        state = checkpoint.load(self.out, CHECKPOINT, self.net, self.opt, self.device)
        if state is not None:
            self.rng.bit_generator.state = state["rng_numpy"]
            start, best, best_epoch, bad = state["epoch"] + 1, state["best"], state["best_epoch"], state["bad"]
            history = [r for r in state["log"] if r["epoch"] <= state["epoch"]]
            best_state = self._load_best()
            log.info("%s: resuming after epoch %d (best %s %.4f at epoch %s)", self.name, state["epoch"], metric,
                     best, best_epoch)
        else:
            start, best, best_epoch, bad, history, best_state = 1, -math.inf, None, 0, [], None
        t_start = time.perf_counter()
        stopped_early = False
        bar = tqdm(total=cfg.optim.epochs, initial=start - 1, desc=f"train {self.name}", unit="epoch",
                   disable=not (self.progress and sys.stderr.isatty()), leave=True, dynamic_ncols=True)
        epoch = start - 1
        for epoch in range(start, cfg.optim.epochs + 1):
            for hook in self.epoch_hooks:
                hook(epoch)
            rec = {"epoch": epoch, **self._epoch(epoch)}
            if epoch % cfg.eval.every == 0 or epoch == cfg.optim.epochs:
                res = self.evaluate("valid")
                rec["valid"] = res.metrics
                rec["eval_s"] = res.seconds
                if res.metrics[metric] > best:
                    best, best_epoch, bad = res.metrics[metric], epoch, 0
                    best_state = copy.deepcopy(self.net.state_dict())
                    checkpoint.save_weights(self.out, BEST, self.net)
                else:
                    bad += 1
            history.append(rec)
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", **({metric: f"{rec['valid'][metric]:.4f}"}
                                                          if "valid" in rec else {}))
            done = bad >= cfg.eval.patience
            if epoch % cfg.checkpoint_every == 0 or done or epoch == cfg.optim.epochs:
                self.out.write_text("log.jsonl", "".join(_jsonl(r) for r in history))
                checkpoint.save(self.out, CHECKPOINT, self.net, self.opt, {
                    "epoch": epoch, "best": best, "best_epoch": best_epoch, "bad": bad,
                    "rng_numpy": self.rng.bit_generator.state, "log": history})
            if on_eval is not None and "valid" in rec:
                on_eval(epoch, rec["valid"], CHECKPOINT)
            if done:
                stopped_early = True
                break
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                bar.close()
                return {"interrupted_after_epoch": epoch}
        bar.close()
        if best_state is not None:
            self.net.load_state_dict(best_state, strict=False)
        valid = self.evaluate("valid")
        if not evaluate_test:
            return {"run": self.name, "best_epoch": best_epoch, "epochs_run": epoch, "valid": valid.metrics,
                    "metric": metric}
        test = self.evaluate("test")  # once, on the chosen epoch
        train_times = [r["train_s"] for r in history]
        eval_times = [r["eval_s"] for r in history if "eval_s" in r]
        result = {
            "run": self.name,
            "model": cfg.model.name,
            "sampler": cfg.sampler.name,
            "loss": cfg.loss.name,
            "seed": self.seed,
            "metric": metric,
            "best_epoch": best_epoch,
            "epochs_run": epoch,
            "stopped_early": stopped_early,
            "valid": valid.metrics,
            "test": test.metrics,
            "valid_users": len(valid.users),
            "test_users": len(test.users),
            "valid_users_skipped": valid.skipped_users,
            "test_users_skipped": test.skipped_users,
            "test_truth_masked_as_train": test.masked_truth,
            "seconds_per_epoch_median": float(np.median(train_times)) if train_times else None,
            "eval_seconds_median": float(np.median(eval_times)) if eval_times else None,
            "seconds_this_call": time.perf_counter() - t_start,
            "device": str(self.device),
        }
        self.out.write_json(METRICS, result)
        self.out.write_text("log.jsonl", "".join(_jsonl(r) for r in history))
        self._write_per_user(test)
        self.out.write_bytes("learning_curve.png",
                             learning_curve(history, metric, best_epoch, f"{self.name}: {cfg.model.name}, "
                                                                         f"{cfg.sampler.name} negatives"))
        return result

    def _load_best(self) -> dict | None:
        if not self.out.exists(BEST):
            return None
        return {k: v.to(self.device) for k, v in checkpoint.read_tensors(self.out, BEST).items()}

    def _write_per_user(self, res: EvalResult) -> None:
        cols = {"user_idx": pa.array(res.users.astype(np.int32))}
        cols.update({k: pa.array(v.astype(np.float32)) for k, v in res.per_user.items()})
        self.out.write_parquet(f"per_user_{res.split}.parquet", pa.table(cols))
        if res.truth is not None:
            t = res.truth
            self.out.write_parquet(f"ranks_{res.split}.parquet", pa.table({
                "user_idx": t[:, 0].astype(np.int32), "item_idx": t[:, 1].astype(np.int32),
                "rank": t[:, 2].astype(np.int16)}))


def _jsonl(rec: dict) -> str:
    import json

    return json.dumps(rec, default=float) + "\n"
