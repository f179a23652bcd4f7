"""Sentence embeddings: sentence-transformers in a Ray Data actor pool (GPU when configured), L2-normalised."""

from __future__ import annotations

import os

import numpy as np

from ..config.llm import EmbedConfig
from .models import resolve_sentence_model


class SentenceEmbedder:
    """Callable class for `map_batches`: encodes the `text` column into a `vector` column."""

    def __init__(self, model_path: str, batch_size: int, threads: int | None, device: str, dtype: str):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads or os.cpu_count() or 1)  # Ray workers start with one thread
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = SentenceTransformer(model_path, device=device)
        self.batch_size, self.dtype = batch_size, np.dtype(dtype)

    def encode(self, texts: list[str]) -> np.ndarray:
        vecs = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        return vecs.astype(self.dtype)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {k: v for k, v in batch.items() if k != "text"}
        out["vector"] = self.encode([str(t) for t in batch["text"]])
        return out


def embed_dataset(ds, cfg: EmbedConfig):
    """A Ray Dataset with a `text` column -> the same rows with a `vector` column instead."""
    import ray

    return ds.map_batches(
        SentenceEmbedder,
        fn_constructor_kwargs=dict(model_path=resolve_sentence_model(cfg.model), batch_size=cfg.batch_size,
                                   threads=cfg.threads, device="cuda" if cfg.num_gpus > 0 else "auto",
                                   dtype=cfg.dtype),
        batch_size=max(cfg.batch_size, 256), batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.concurrency),
        num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus or None,
    )
