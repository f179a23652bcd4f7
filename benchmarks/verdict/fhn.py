"""False hard negatives: over one epoch of training at a row's chosen setting (continuing from its seed's chosen
model, so the sampler sees a trained model, as it does in most of training), the share of drawn negatives that
are the user's own validation or test items, and the mean text similarity of each negative to its positive.

The recording wraps the trainer's sampler for that one diagnostic epoch only: training runs never carry it.
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch

from hnl_ray.cf import checkpoint
from hnl_ray.cf.data import CFData, PositiveSet
from hnl_ray.cf.samplers import Negatives
from hnl_ray.config.cf import TrainConfig
from hnl_ray.storage import RunDir


class RecordingSampler:
    """Delegates to a sampler and keeps the (user, positive, negative item) triples it returns. Synthesised
    negatives (MixGCF) have no item id and are counted as such."""

    def __init__(self, inner):
        self.inner = inner
        self.needs_model, self.needs_layers = inner.needs_model, inner.needs_layers
        self.users: list[np.ndarray] = []
        self.pos: list[np.ndarray] = []
        self.items: list[np.ndarray] = []
        self.synthesised = 0

    def __getattr__(self, name):  # set_alpha, cfg, ... of the wrapped sampler
        return getattr(self.inner, name)

    def sample(self, users, pos, emb=None, model=None) -> Negatives:
        out = self.inner.sample(users, pos, emb, model)
        if out.items is None:
            self.synthesised += len(users)
        else:
            items = out.items.cpu().numpy().reshape(len(users), -1)
            self.users.append(np.repeat(users, items.shape[1]))
            self.pos.append(np.repeat(pos, items.shape[1]))
            self.items.append(items.reshape(-1))
        return out


def shares(users: np.ndarray, pos: np.ndarray, negs: np.ndarray, data: CFData,
           text: np.ndarray | None) -> dict[str, float | int | None]:
    """Pure part: share of negatives in the user's valid/test items; mean cos(text(pos), text(neg))."""
    held = PositiveSet(np.concatenate([data.valid[0], data.test[0]]), np.concatenate([data.valid[1], data.test[1]]),
                       data.n_users, data.n_items)
    valid = PositiveSet(*data.valid, data.n_users, data.n_items)
    test = PositiveSet(*data.test, data.n_users, data.n_items)
    out: dict[str, float | int | None] = {
        "negatives": int(len(negs)),
        "share_valid_or_test": float(held.contains(users, negs).mean()) if len(negs) else None,
        "share_valid": float(valid.contains(users, negs).mean()) if len(negs) else None,
        "share_test": float(test.contains(users, negs).mean()) if len(negs) else None,
        "text_sim_to_positive": None,
    }
    if text is not None and len(negs):
        out["text_sim_to_positive"] = float(np.einsum("nd,nd->n", text[pos], text[negs]).mean())
    return out


def diagnose(tcfg: TrainConfig, run: RunDir, data: CFData, trained: str, seed: int,
             text: np.ndarray | None, epoch: int = 1) -> dict:
    """One recorded epoch of the row's sampler, starting from the chosen model of CF run `trained`."""
    from hnl_ray.artifacts import Artifacts
    from hnl_ray.cf.trainer import BEST
    from hnl_ray.stages.train import build_run

    art = Artifacts(run)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_run(tcfg, art, data, RunDir(tmp), "fhn", seed, progress=False)
        tensors = checkpoint.read_tensors(art.cf_run(trained), BEST)
        trainer.net.load_state_dict({k: v.to(trainer.device) for k, v in tensors.items()}, strict=False)
        rec = RecordingSampler(trainer.sampler)
        trainer.sampler = rec
        for hook in trainer.epoch_hooks:  # e.g. the alpha schedule, at the epoch the chosen model is from
            hook(epoch)
        with torch.enable_grad():
            trainer._epoch(epoch)
    if not rec.items:
        return {"negatives": 0, "synthesised": rec.synthesised, "share_valid_or_test": None, "share_valid": None,
                "share_test": None, "text_sim_to_positive": None}
    res = shares(np.concatenate(rec.users), np.concatenate(rec.pos), np.concatenate(rec.items), data, text)
    return {**res, "synthesised": rec.synthesised}
