"""Sentence embeddings: sentence-transformers in a Ray Data actor pool (GPU when configured), L2-normalised."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

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


def vector_column(vecs: np.ndarray) -> pa.FixedSizeListArray:
    """(n, d) array -> a fixed-size-list Arrow column (what Parquet stores and every reader understands)."""
    vecs = np.ascontiguousarray(vecs)
    return pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), vecs.shape[1])


def vectors(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed-size-list column -> (n, d) numpy array, without copying through Python objects."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    dim = arr.type.list_size
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), dim)


def collect(ds) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Materialise an embedded dataset: (other columns, vectors)."""
    cols: dict[str, list] = {}
    vecs: list[np.ndarray] = []
    for batch in ds.iter_batches(batch_format="numpy", batch_size=4096):
        vecs.append(np.asarray(batch["vector"]))
        for k, v in batch.items():
            if k != "vector":
                cols.setdefault(k, []).append(v)
    return ({k: np.concatenate(v) for k, v in cols.items()},
            np.concatenate(vecs) if vecs else np.zeros((0, 0), np.float32))
