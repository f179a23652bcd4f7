"""The `hardneg` stage (HNLMRec inference): a Ray Data actor pool loads the base model + the fine-tuned LoRA
(merged for speed) and encodes, exactly as fine-tuning did,

* the catalogue: every item's passage (title + profile, the positives' format) -> hardneg/items.parquet
  (item_idx, vector float32);
* the query of every distinct training pair (u, i) (unless `hardneg.pairs_per_user` samples them) ->
  hardneg/part-*.parquet keyed by (user_idx, item_idx) with float16 vectors and, with `hardneg.neighbours` N,
  the pair's N nearest catalogue items by cosine (`neighbours`, nearest first, the user's training positives
  excluded, -1 where fewer remain); resumable like generation.

Checks re-embed a sample of pairs and of items with the training-time forward (unmerged adapter, float32):
cosine >= 0.999. With `hardneg.base_control`, hardneg-base/ holds the same outputs from the model before
fine-tuning (the `base` control; the `shuffled` and `random` controls are derived from hardneg/ by the sampler
that asks for them).
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
from ..errors import ConfigValueError, StageError
from ..llm.generate import dataset_in_blocks
from . import Context, Output, step
from .finetune import cf_rows
from .negatives import sample_pairs

log = logging.getLogger(__name__)

MIN_COSINE = 0.999


class HardnegEmbedder:
    """Callable class for `map_batches`: base + merged LoRA (`tuned` False: the base model alone). Item
    passages -> float32 vectors; queries -> float16 vectors, plus their nearest catalogue items (searched in
    `folder`'s catalogue) when `neighbours` is given."""

    def __init__(self, base_path: str, art: Artifacts, finetune: dict, threads: int | None, device: str,
                 tuned: bool = True, folder: str = A.HARDNEG, neighbours: dict | None = None):
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
        enc = LLMEncoder(base_path, cfg, cf_dim=self.cf[0].shape[1] if self.cf else None, lora=tuned)
        if tuned:
            enc.load_trainable(art.adapter())
        self.device = torch.device("cuda" if device == "cuda" and torch.cuda.is_available() else "cpu")
        self.enc = enc.merge().to(self.device).eval()
        self.torch = torch
        self.nb = None
        if neighbours:
            items = art.hardneg_item_matrix(neighbours["n_items"], folder)
            self.nb = (items / np.linalg.norm(items, axis=1, keepdims=True).clip(min=1e-12),
                       (np.asarray(neighbours["indptr"]), np.asarray(neighbours["indices"])), neighbours["n"])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..cf.neighbours import pair_neighbours

        if "passage" in batch:
            with self.torch.no_grad(), self.enc.autocast(self.device):
                v = self.enc.encode_items([str(x) for x in batch["passage"]])
            return {"item_idx": batch["item_idx"], "vector": v.cpu().numpy().astype(np.float32)}
        cf = None
        if self.cf is not None:
            u = self.torch.as_tensor(batch["user_idx"].astype(np.int64))
            i = self.torch.as_tensor(batch["item_idx"].astype(np.int64))
            cf = self.torch.stack([self.cf[0][u], self.cf[1][i]], 1)
        with self.torch.no_grad(), self.enc.autocast(self.device):
            v = self.enc.encode_queries([str(q) for q in batch["query"]], cf).cpu().numpy()
        out = {"id": batch["id"], "user_idx": batch["user_idx"], "item_idx": batch["item_idx"],
               "vector": v.astype(np.float16)}
        if self.nb is not None:
            items, csr, n = self.nb
            unit = v / np.linalg.norm(v, axis=1, keepdims=True).clip(min=1e-12)
            out["neighbours"] = pair_neighbours(unit, batch["user_idx"].astype(np.int64), items, csr, n)
        return out


def queries(cfg: Config, art: Artifacts) -> pa.Table:
    """One row per distinct selected training pair (a repeat purchase is one pair)."""
    from ..llm.encoder import query_text

    data = art.prepared()
    u, i = sample_pairs(data["train"]["user_idx"].to_numpy(), data["train"]["item_idx"].to_numpy(),
                        cfg.hardneg.pairs_per_user, cfg.draw_seed)
    _, first = np.unique(u.astype(np.int64) * (int(i.max(initial=0)) + 1) + i, return_index=True)
    first.sort()
    u, i = u[first], i[first]
    titles = dict(zip(data["items"]["item_idx"].to_pylist(), data["items"]["title"].to_pylist()))
    uprof, iprof = art.user_profiles(), art.item_profiles()
    q = [query_text(cfg.finetune.instruction, uprof.get(a), titles.get(b), iprof.get(b))
         for a, b in zip(u.tolist(), i.tolist())]
    return pa.table({"id": [f"pair:{a}:{b}" for a, b in zip(u.tolist(), i.tolist())],
                     "user_idx": u.astype(np.int32), "item_idx": i.astype(np.int32), "query": q})


def passages(art: Artifacts) -> pa.Table:
    """Every catalogue item's passage, in the format of fine-tuning's positives."""
    from ..llm.encoder import item_text

    items = art.prepared()["items"]
    iprof = art.item_profiles()
    return pa.table({"item_idx": items["item_idx"].cast(pa.int32()),
                     "passage": [item_text(t, iprof.get(i)) for i, t in zip(items["item_idx"].to_pylist(),
                                                                            items["title"].to_pylist())]})


def consistency(cfg: Config, base_path: str, art: Artifacts, rows: pa.Table, items: pa.Table | None = None,
                tuned: bool = True) -> float:
    """Lowest cosine between stored inference vectors and the training-time forward (unmerged adapter, on CPU
    in finetune.precision) for the same queries and, with `items` (passage, vector), the same item passages."""
    import torch

    from ..llm.encoder import LLMEncoder

    if rows.num_rows == 0 and (items is None or items.num_rows == 0):
        return 1.0
    cf = cf_rows(art, rows) if cfg.finetune.cf_tokens else None
    enc = LLMEncoder(base_path, cfg.finetune, cf_dim=None if cf is None else cf.shape[-1], lora=tuned)
    if tuned:
        enc.load_trainable(art.adapter())
    enc.train(False)
    cos = []
    with torch.no_grad(), enc.autocast(torch.device("cpu")):  # the precision it was trained in
        if rows.num_rows:
            ref = enc.encode_queries(rows["query"].to_pylist(), cf)
            got = torch.from_numpy(vectors(rows["vector"]).astype(np.float32))
            cos.append(float(torch.nn.functional.cosine_similarity(ref, got, dim=1).min()))
        if items is not None and items.num_rows:
            ref = enc.encode_items(items["passage"].to_pylist())
            got = torch.from_numpy(vectors(items["vector"]).astype(np.float32))
            cos.append(float(torch.nn.functional.cosine_similarity(ref, got, dim=1).min()))
    return min(cos)


def run(ctx: Context) -> dict:
    from ..llm.models import fingerprint_name, resolve_finetune_model

    cfg, art = ctx.cfg, ctx.art
    ft = art.need(A.FINETUNE, "the fine-tuned adapter")
    base_path = resolve_finetune_model(cfg.finetune, cfg.llm.model_cache)
    n_items = art.prepared()["items"].num_rows
    if cfg.hardneg.neighbours > n_items:
        raise ConfigValueError(f"hardneg.neighbours: {cfg.hardneg.neighbours} nearest items asked for, but the "
                               f"catalogue has {n_items} items")
    h = cfg.hardneg.model_dump(mode="json", include={"pairs_per_user", "neighbours"})
    out = encode_folder(ctx, A.HARDNEG, base_path, tuned=True, part={"hardneg": h, "seed": cfg.draw_seed},
                        inputs={"finetune": ft["fingerprint"], "prepared": art.fingerprint(A.PREPARED)})
    if cfg.hardneg.base_control:
        # the model before fine-tuning, seeing what fine-tuning saw (format, pooling, profiles), not what it learnt
        ident = cfg.finetune.model_dump(mode="json", include={"encoder", "instruction", "use_chat_template",
                                                                "pooling", "max_query_tokens",
                                                                "max_passage_tokens", "cf_tokens"})
        out = {**out, "base_control": encode_folder(
            ctx, A.HARDNEG_BASE, base_path, tuned=False,
            part={"hardneg": h, "seed": cfg.draw_seed, "finetune": ident,
                  "base_path": fingerprint_name(base_path)},
            inputs={"prepared": art.fingerprint(A.PREPARED), "user_profiles": art.fingerprint(A.USER_PROFILES),
                    "item_profiles": art.fingerprint(A.ITEM_PROFILES)})}
    return out


def encode_folder(ctx: Context, folder: str, base_path: str, tuned: bool, part: dict, inputs: dict) -> dict:
    """One model's catalogue, pair vectors and neighbours into `folder`: resumable, checked, with a manifest."""
    cfg, art = ctx.cfg, ctx.art
    h = cfg.hardneg

    def work(fp: str) -> Output:
        timings = manifest.Timings()
        kwargs = dict(base_path=base_path, art=art, finetune=cfg.finetune.model_dump(mode="json"),
                      threads=h.threads, device="cuda" if h.num_gpus > 0 else "cpu", tuned=tuned, folder=folder)
        pool = dict(batch_size=h.batch_size, batch_format="numpy", num_cpus=h.num_cpus, num_gpus=h.num_gpus or None)
        items = passages(art)
        if not art.has_hardneg_items(folder):  # the catalogue first: the pairs' neighbours are searched in it
            ray = ctx.ray()
            ds = dataset_in_blocks(items, max(h.shard_rows, h.batch_size)).map_batches(
                HardnegEmbedder, fn_constructor_kwargs=kwargs,
                compute=ray.data.ActorPoolStrategy(size=h.concurrency), **pool)
            with timings("items"):
                got = list(ds.iter_batches(batch_format="numpy", batch_size=h.shard_rows))
            idx = np.concatenate([b["item_idx"] for b in got])
            vec = np.concatenate([b["vector"] for b in got]).astype(np.float32)
            order = np.argsort(idx)
            art.write_hardneg_items(idx[order], vec[order], folder)
        table = queries(cfg, art)
        done = art.shards(folder, columns=["id"])
        todo = table
        if done is not None:
            todo = table.filter(pc.invert(pc.is_in(table["id"], value_set=done["id"].combine_chunks())))
        if todo.num_rows:
            ray = ctx.ray()
            nb = None
            if h.neighbours:
                from ..cf.data import csr

                data = art.prepared()
                indptr, indices = csr(data["train"]["user_idx"].to_numpy(), data["train"]["item_idx"].to_numpy(),
                                      data["users"].num_rows)
                nb = {"n_items": items.num_rows, "n": h.neighbours, "indptr": indptr, "indices": indices}
            writer = art.shard_writer(folder, h.shard_rows)
            ds = dataset_in_blocks(todo, max(h.shard_rows, h.batch_size)).map_batches(
                HardnegEmbedder, fn_constructor_kwargs={**kwargs, "neighbours": nb},
                compute=ray.data.ActorPoolStrategy(size=h.concurrency), **pool)
            with timings("embed"):
                for b in ds.iter_batches(batch_format="numpy", batch_size=h.shard_rows):
                    cols = {"id": pa.array(b["id"].astype(str)), "user_idx": b["user_idx"],
                            "item_idx": b["item_idx"],
                            "vector": vector_column(np.asarray(b["vector"], dtype=np.float16))}
                    if nb is not None:
                        cols["neighbours"] = vector_column(np.asarray(b["neighbours"], dtype=np.int32))
                    writer.add(pa.table(cols))
                writer.close()
        out = art.shards(folder)
        sample = out.slice(0, min(h.check_rows, out.num_rows))
        query_of = dict(zip(table["id"].to_pylist(), table["query"].to_pylist()))
        sample = sample.append_column("query", pa.array([query_of[i] for i in sample["id"].to_pylist()]))
        cat = art.hardneg_item_matrix(items.num_rows, folder)
        k = min(h.check_rows, items.num_rows)
        cat_sample = pa.table({"passage": items["passage"].slice(0, k),
                               "vector": vector_column(cat[items["item_idx"].to_numpy()[:k]])})
        with timings("check"):
            cos = consistency(cfg, base_path, art, sample, cat_sample, tuned=tuned)
        if cos < MIN_COSINE:
            raise StageError(f"{folder}: inference and training-time embeddings disagree (cosine {cos:.5f} < "
                             f"{MIN_COSINE}); the adapter or the pooling differs between them")
        dim = out["vector"].type.list_size
        counts = {"pairs": out.num_rows, "items": int(cat.shape[0]), "dim": dim, "dtype": "float16",
                  "neighbours": h.neighbours, "model": "fine-tuned" if tuned else "base (before fine-tuning)",
                  "check_min_cosine": round(cos, 6), "bytes_per_million_pairs_in_memory": dim * 2 * 10**6,
                  "parquet_bytes": art.shard_bytes(folder),
                  # finetune.precision is in no fingerprint: the manifest says which one the vectors come from
                  "precision": "bf16" if cfg.finetune.precision == "bf16" or (
                      cfg.finetune.precision == "auto" and h.num_gpus > 0) else "fp32"}
        if h.neighbours:
            counts["pairs_with_fewer_neighbours"] = int((vectors(out["neighbours"]) < 0).any(1).sum())
        return Output(counts=counts, outputs=A.HARDNEG_FILES, timings=timings)

    return step(ctx, folder, part, inputs, work, label="hardneg" if folder == A.HARDNEG else "hardneg-base",
                resumable=True)
