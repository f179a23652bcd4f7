"""The `hardneg` stage (HNLMRec inference): a Ray Data actor pool loads the base LLM + the fine-tuned LoRA
(merged for speed), embeds the query of every selected training pair (u, i) exactly as fine-tuning did, and
writes hardneg/part-*.parquet keyed by (user_idx, item_idx) with float16 vectors; resumable like generation.
A check re-embeds a sample of rows with the training-time forward (unmerged adapter, float32): cosine >= 0.999.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import artifacts as A
from .. import manifest
from ..arrays import vector_column, vectors
from ..artifacts import Artifacts
from ..config import Config
from ..config.hnlmrec import FinetuneConfig
from ..errors import StageError
from ..llm.generate import dataset_in_blocks
from . import Context, Output, step
from .finetune import cf_rows
from .negatives import sample_pairs

log = logging.getLogger(__name__)

MIN_COSINE = 0.999


class HardnegEmbedder:
    """Callable class for `map_batches`: base + merged LoRA; queries -> float16 vectors."""

    def __init__(self, base_path: str, art: Artifacts, finetune: dict, threads: int | None, device: str):
        import torch

        from ..llm.encoder import LLMEncoder
        from ..quiet import quiet_worker

        quiet_worker()
        torch.set_num_threads(threads or os.cpu_count() or 1)
        cfg = FinetuneConfig.model_validate(finetune)
        self.cf = None
        if cfg.cf_tokens:  # read through the run's filesystem: the actor may run on another node
            t = art.teacher_embeddings()
            self.cf = (t["users"], t["items"])
        enc = LLMEncoder(base_path, cfg, cf_dim=self.cf[0].shape[1] if self.cf else None)
        enc.load_trainable(art.adapter())
        self.device = torch.device("cuda" if device == "cuda" and torch.cuda.is_available() else "cpu")
        self.enc = enc.merge().to(self.device).eval()
        self.torch = torch

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cf = None
        if self.cf is not None:
            u = self.torch.as_tensor(batch["user_idx"].astype(np.int64))
            i = self.torch.as_tensor(batch["item_idx"].astype(np.int64))
            cf = self.torch.stack([self.cf[0][u], self.cf[1][i]], 1)
        with self.torch.no_grad():
            v = self.enc.encode_queries([str(q) for q in batch["query"]], cf)
        return {"id": batch["id"], "user_idx": batch["user_idx"], "item_idx": batch["item_idx"],
                "vector": v.cpu().numpy().astype(np.float16)}


def queries(cfg: Config, art: Artifacts) -> pa.Table:
    from ..llm.encoder import query_text

    data = art.prepared()
    u, i = sample_pairs(data["train"]["user_idx"].to_numpy(), data["train"]["item_idx"].to_numpy(),
                        cfg.hardneg.pairs_per_user, cfg.seed)
    titles = dict(zip(data["items"]["item_idx"].to_pylist(), data["items"]["title"].to_pylist()))
    uprof, iprof = art.user_profiles(), art.item_profiles()
    q = [query_text(cfg.finetune.instruction, uprof.get(a), titles.get(b), iprof.get(b))
         for a, b in zip(u.tolist(), i.tolist())]
    return pa.table({"id": [f"pair:{a}:{b}" for a, b in zip(u.tolist(), i.tolist())],
                     "user_idx": u.astype(np.int32), "item_idx": i.astype(np.int32), "query": q})


def consistency(cfg: Config, base_path: str, art: Artifacts, rows: pa.Table) -> float:
    """Lowest cosine between stored inference vectors and the training-time forward for the same queries."""
    import torch

    from ..llm.encoder import LLMEncoder

    if rows.num_rows == 0:
        return 1.0
    cf = cf_rows(art, rows) if cfg.finetune.cf_tokens else None
    enc = LLMEncoder(base_path, cfg.finetune, cf_dim=None if cf is None else cf.shape[-1])
    enc.load_trainable(art.adapter())
    enc.train(False)
    with torch.no_grad():
        ref = enc.encode_queries(rows["query"].to_pylist(), cf)
    got = torch.from_numpy(vectors(rows["vector"]).astype(np.float32))
    return float(torch.nn.functional.cosine_similarity(ref, got, dim=1).min())


def run(ctx: Context) -> dict:
    from ..llm.models import resolve_llm

    cfg, art = ctx.cfg, ctx.art
    ft = art.need(A.FINETUNE, "the fine-tuned adapter")
    base_path = resolve_llm(cfg.finetune.base_model, cfg.llm.model_cache)
    part = {"hardneg": cfg.hardneg.model_dump(mode="json", include={"pairs_per_user"}), "seed": cfg.seed}
    inputs = {"finetune": ft["fingerprint"], "prepared": art.fingerprint(A.PREPARED)}

    def work(fp: str) -> Output:
        table = queries(cfg, art)
        done = art.shards(A.HARDNEG, columns=["id"])
        todo = table
        if done is not None:
            todo = table.filter(pc.invert(pc.is_in(table["id"], value_set=done["id"].combine_chunks())))
        timings = manifest.Timings()
        h = cfg.hardneg
        if todo.num_rows:
            ray = ctx.ray()
            writer = art.shard_writer(A.HARDNEG, h.shard_rows)
            ds = dataset_in_blocks(todo, max(h.shard_rows, h.batch_size)).map_batches(
                HardnegEmbedder, batch_size=h.batch_size, batch_format="numpy",
                fn_constructor_kwargs=dict(base_path=base_path, art=art, finetune=cfg.finetune.model_dump(mode="json"),
                                           threads=h.threads, device="cuda" if h.num_gpus > 0 else "cpu"),
                compute=ray.data.ActorPoolStrategy(size=h.concurrency), num_cpus=h.num_cpus,
                num_gpus=h.num_gpus or None)
            with timings("embed"):
                for b in ds.iter_batches(batch_format="numpy", batch_size=h.shard_rows):
                    writer.add(pa.table({"id": pa.array(b["id"].astype(str)), "user_idx": b["user_idx"],
                                         "item_idx": b["item_idx"],
                                         "vector": vector_column(np.asarray(b["vector"], dtype=np.float16))}))
                writer.close()
        out = art.shards(A.HARDNEG)
        sample = out.slice(0, min(h.check_rows, out.num_rows))
        query_of = dict(zip(table["id"].to_pylist(), table["query"].to_pylist()))
        sample = sample.append_column("query", pa.array([query_of[i] for i in sample["id"].to_pylist()]))
        with timings("check"):
            cos = consistency(cfg, base_path, art, sample)
        if cos < MIN_COSINE:
            raise StageError(f"hardneg: inference and training-time embeddings disagree (cosine {cos:.5f} < "
                             f"{MIN_COSINE}); the adapter or the pooling differs between them")
        dim = out["vector"].type.list_size
        counts = {"pairs": out.num_rows, "dim": dim, "dtype": "float16", "check_min_cosine": round(cos, 6),
                  "bytes_per_million_pairs_in_memory": dim * 2 * 10**6,
                  "parquet_bytes": art.shard_bytes(A.HARDNEG)}
        return Output(counts=counts, timings=timings)

    return step(ctx, A.HARDNEG, part, inputs, work, label="hardneg", resumable=True)
