"""The `finetune` stage (HNLMRec): LoRA contrastive fine-tuning of an LLM encoder on Ray Train, supervised by
the CF teacher.

Data: query = instruction + the user's profile + the interacted item's title and profile; positives = the
teacher's K targets of the pair (title + profile; contrastive.multi_positive_loss, pairwise or InfoNCE);
negatives = the other queries' targets in the global batch (and optionally random catalog items). The model is a
rung of the ladder (`finetune.encoder`): a causal LM, or a sentence-transformers encoder (the CPU-sized rung).
Ray Train runs `TorchTrainer` with `prepare_model` (DDP over a bf16 base on GPU), the pairs as
a Ray Dataset sharded to the workers, bf16 on GPU, gradient accumulation, and checkpoints (adapter weights and
optimiser state as safetensors) every `checkpoint_every` steps under `RunConfig(storage_path, name)` with
`FailureConfig(max_failures)`: a killed worker resumes from the last checkpoint, and a re-submitted job with the
same run directory continues the same run. A checkpoint carried from another machine (finetune/carried/, with
the fingerprint it belongs to in carried.json) is where a fresh run directory starts when Ray Train's storage
has none: Ray Train V2's way (the loop loads it when `get_checkpoint()` is None), since the trainer's
`resume_from_checkpoint` is gone.

Outputs: finetune/adapter.safetensors (LoRA + projection), finetune/log.jsonl, finetune/metrics.json.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time

import numpy as np
import pyarrow as pa

from .. import artifacts as A
from ..artifacts import Artifacts
from ..config import Config
from ..errors import StageError
from ..llm.models import fingerprint_name
from . import Context, Output, step

log = logging.getLogger(__name__)


def supervision(cfg: Config, art: Artifacts) -> pa.Table:
    """Teacher pairs as (query, positives) texts, one row per training pair with its K targets (the teacher
    writes one row per (pair, target); a v1 table with one target per pair gives K = 1), with the ids needed
    for CF soft tokens and the batch masks. `positives` and `targets` have K slots; a pair with fewer targets
    repeats its first one in the padding slots, whose `targets` id is -1 (neither a positive nor a negative)."""
    from ..llm.encoder import item_text, query_text

    data = art.prepared()
    t = art.teacher_pairs()
    u_all = t["user_idx"].to_numpy().astype(np.int64)
    i_all = t["item_idx"].to_numpy().astype(np.int64)
    j_all = t["neg_item_idx"].to_numpy().astype(np.int64)
    # group rows by pair in first-seen order, the targets in the table's order (best first); a repeated
    # training pair (a repeat purchase) is one pair, its targets listed once
    key = u_all * (int(i_all.max(initial=0)) + 1) + i_all
    _, first, inv = np.unique(key, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # pair number -> group, in first-seen order
    rank_of = np.empty_like(order)
    rank_of[order] = np.arange(len(order))
    groups: list[list[int]] = [[] for _ in range(len(order))]
    for r, g in enumerate(rank_of[inv].tolist()):
        if j_all[r] not in groups[g]:
            groups[g].append(int(j_all[r]))
    k = max((len(g) for g in groups), default=1)
    heads = first[order]
    if cfg.finetune.pairs_limit:
        groups, heads = groups[: cfg.finetune.pairs_limit], heads[: cfg.finetune.pairs_limit]
    titles = dict(zip(data["items"]["item_idx"].to_pylist(), data["items"]["title"].to_pylist()))
    iprof = art.item_profiles()
    uprof = art.user_profiles()
    q, p, tg = [], [], []
    for row, g in zip(heads.tolist(), groups):
        u, i = int(u_all[row]), int(i_all[row])
        q.append(query_text(cfg.finetune.instruction, uprof.get(u), titles.get(i), iprof.get(i)))
        p.append([item_text(titles.get(j), iprof.get(j)) for j in g] + [item_text(titles.get(g[0]),
                                                                                  iprof.get(g[0]))] * (k - len(g)))
        tg.append(g + [-1] * (k - len(g)))
    return pa.table({"user_idx": pa.array(u_all[heads].astype(np.int32)),
                     "item_idx": pa.array(i_all[heads].astype(np.int32)),
                     "targets": pa.array(tg, pa.list_(pa.int32(), k)), "query": q,
                     "positives": pa.array(p, pa.list_(pa.string(), k))})


def batch_passages(positives, targets) -> tuple[list[str], "torch.Tensor"]:
    """A batch's K target slots per query, flattened in query order, and their (B, K) ids."""
    import torch

    texts = [str(x) for row in positives for x in row]
    return texts, torch.as_tensor(np.stack([np.asarray(r, dtype=np.int64) for r in targets]))


def _train_loop(config: dict) -> None:  # runs on every Ray Train worker
    import torch
    import torch.distributed as dist
    from safetensors.torch import load_file, save_file

    import ray.train
    import ray.train.torch

    from ..cf.checkpoint import load_optimizer, optimizer_tensors
    from ..config.hnlmrec import FinetuneConfig
    from ..llm.contrastive import in_batch_accuracy
    from ..llm.encoder import LLMEncoder, multi_positive_batch

    from ..quiet import quiet_worker

    quiet_worker()
    cfg = FinetuneConfig.model_validate(config["finetune"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    use_gpu = cfg.use_gpu and torch.cuda.is_available()
    if not use_gpu:
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 2) // world))
    torch.manual_seed(config["seed"] + rank)
    device = ray.train.torch.get_device()
    cf_vecs = None
    if config.get("cf_tokens"):  # read through the run's filesystem: this worker may be on another node
        t = config["artifacts"].teacher_embeddings()
        cf_vecs = (t["users"], t["items"])
    enc = LLMEncoder(config["base_path"], cfg, cf_dim=cf_vecs[0].shape[1] if cf_vecs else None)
    # from_pretrained leaves the model in eval mode, where transformers skips activation checkpointing (and LoRA
    # dropout) without a word: training mode, or each worker keeps every layer's activations.
    enc.train()
    if cfg.gradient_checkpointing:  # non-reentrant: works with frozen (LoRA) inputs and DDP's static graph
        enc.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if world > 1 or use_gpu:
        # Queries and items go through the same module in two forward passes per step: DDP needs a static graph.
        model = ray.train.torch.prepare_model(enc, parallel_strategy="ddp",
                                              parallel_strategy_kwargs={"static_graph": True})
    else:
        model = enc.to(device)
    inner: LLMEncoder = model.module if hasattr(model, "module") else model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    step, epoch, start_batch, history = 0, 0, 0, []
    ckpt = ray.train.get_checkpoint()
    from_carried = ckpt is None and bool(config.get("carried"))
    if from_carried:
        ckpt = ray.train.Checkpoint(path=config["carried"], filesystem=config.get("carried_fs"))
    if ckpt is not None:
        with ckpt.as_directory() as d:
            inner.load_trainable(load_file(os.path.join(d, "adapter.safetensors")))
            load_optimizer(opt, load_file(os.path.join(d, "optimizer.safetensors")), device)
            state = json.load(open(os.path.join(d, "state.json")))
        step, epoch, start_batch, history = state["step"], state["epoch"], state["batch"], state["history"]
        history.append({"event": "resumed", "step": step})
        print(f"[finetune] rank {rank}: resumed from the checkpoint at step {step}", flush=True)
    dev = torch.device("cuda") if use_gpu else torch.device("cpu")
    autocast = inner.autocast(dev)
    if step and not used_precisions(history):  # a run begun before the record: `auto`, fp32 on a CPU
        history.append({"event": "precision", "step": 0, "value": "unrecorded (auto)"})
    history.append({"event": "precision", "step": step, "value": "bf16" if inner.bf16(dev) else "fp32"})
    # The teacher's targets this (re)start trains on: a fresh machine retrains the CF teacher, which need not
    # give the same targets bit for bit, so a run carried across machines says whether its supervision changed
    if from_carried and not supervisions(history) and config.get("carried_supervision"):
        # a run begun before the event existed: the digest `carry` read from the machine it came from
        history.append({"event": "supervision", "step": step, "teacher_pairs": config["carried_supervision"]})
    if (sup := config.get("supervision")) is not None:
        if supervisions(history) and sup not in supervisions(history):
            print(f"[finetune] rank {rank}: resumed at step {step} on other teacher targets (digest {sup}, "
                  f"earlier {supervisions(history)})", flush=True)
        history.append({"event": "supervision", "step": step, "teacher_pairs": sup})
    if not use_gpu and cfg.precision == "bf16" and not native_bf16():
        print(f"[finetune] rank {rank}: finetune.precision bf16 on a CPU without native bf16 (AVX512-BF16 or AMX): "
              "emulated, slower than fp32; set finetune.precision: fp32 to go on in fp32", flush=True)
    extra = config.get("random_items") or []

    def seed_batch(ep: int, b: int) -> np.random.Generator:
        """The random state of one batch (LoRA dropout, random negatives) is a function of (seed, rank, epoch,
        batch): a run resumed from a checkpoint draws exactly what the uninterrupted run drew."""
        ss = np.random.SeedSequence([config["seed"], rank, ep, b])
        torch.manual_seed(int(ss.generate_state(1)[0]))
        return np.random.default_rng(ss)

    def gather(x: torch.Tensor) -> torch.Tensor:
        if world == 1:
            return x
        from torch.distributed._functional_collectives import all_gather_single_autograd

        # Differentiable: the negatives come from the global batch, and their gradients go back to their rank.
        return all_gather_single_autograd(x.contiguous(), 0, dist.group.WORLD)

    def cf_of(batch) -> torch.Tensor | None:
        if cf_vecs is None:
            return None
        u = torch.as_tensor(np.asarray(batch["user_idx"], dtype=np.int64))
        i = torch.as_tensor(np.asarray(batch["item_idx"], dtype=np.int64))
        return torch.stack([cf_vecs[0][u], cf_vecs[1][i]], 1)

    # The step of the last checkpoint in Ray's storage; a carried one is not there yet, so the run reports it again
    # (else a carried checkpoint of the last step would leave the run without any).
    saved = {"step": -1 if from_carried else step}

    def save(ep: int, next_batch: int, loss: float) -> None:
        """A checkpoint from rank 0 (adapter, optimiser, progress); every rank reports (it is a barrier)."""
        with tempfile.TemporaryDirectory() as d:
            ck = None
            if rank == 0:
                save_file(inner.trainable_state(), os.path.join(d, "adapter.safetensors"))
                save_file(optimizer_tensors(opt), os.path.join(d, "optimizer.safetensors"))
                with open(os.path.join(d, "state.json"), "w") as f:
                    json.dump({"step": step, "epoch": ep, "batch": next_batch, "history": history,
                               "workers": world, "batch_size": cfg.batch_size}, f)
                ck = ray.train.Checkpoint.from_directory(d)
            ray.train.report({"step": step, "loss": loss}, checkpoint=ck)
        saved["step"] = step

    shard = ray.train.get_dataset_shard("train")
    max_steps = cfg.max_steps or 10**12
    t0 = time.perf_counter()
    tokens = pairs = 0  # this worker's, since this (re)start
    done = step >= max_steps  # resumed from the last checkpoint (killed before the manifest): nothing to train
    while epoch < cfg.epochs and not done:
        for b, batch in enumerate(shard.iter_batches(batch_size=cfg.batch_size, batch_format="numpy",
                                                     drop_last=True)):
            if b < start_batch:
                continue  # resumed mid-epoch: these batches were already trained on
            rng = seed_batch(epoch, b)
            texts, targets = batch_passages(batch["positives"], batch["targets"])
            extra_ids = None
            if extra and cfg.random_negatives:
                picks = rng.choice(len(extra), cfg.random_negatives)
                texts += [extra[x] for x in picks]
                extra_ids = torch.as_tensor(np.asarray(picks, dtype=np.int64))  # random_items[x] is item x
            with autocast:
                loss, qg, pg, n_tok, masks = multi_positive_batch(model, inner, list(batch["query"]), texts,
                                                                  targets, device, cf_of(batch), gather,
                                                                  extra_ids)
                loss = loss / cfg.grad_accum
            tokens += n_tok
            pairs += len(batch["query"])
            loss.backward()
            if (b + 1) % cfg.grad_accum:
                continue
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            rec = {"step": step, "epoch": epoch, "loss": float(loss.detach()) * cfg.grad_accum,
                   "in_batch_acc": in_batch_accuracy(qg.detach(), pg.detach(), *masks),
                   "s": round(time.perf_counter() - t0, 2), "tokens": tokens, "pairs": pairs}
            history.append(rec)
            done = step >= max_steps
            if step % cfg.checkpoint_every == 0 or done:
                save(epoch, b + 1, rec["loss"])
            if done:
                break
        else:
            epoch += 1
            start_batch = 0
    if step != saved["step"]:  # the end of the last epoch fell between checkpoints
        save(epoch, 0, history[-1]["loss"] if history and "loss" in history[-1] else float("nan"))
    if world > 1 and dist.is_initialized():
        dist.barrier()


def config_part(cfg, base_path: str) -> dict:
    """What the fine-tuning's fingerprint covers: not the keys that only place or pace the work."""
    # precision is how the steps are computed, as threads are (fp32 master weights either way): a checkpoint
    # carried to a machine without native bf16 can go on in fp32; metrics.json lists the precisions used
    keep_out = {"num_workers", "cpus_per_worker", "threads", "checkpoint_every", "max_failures", "precision"}
    return {"finetune": cfg.finetune.model_dump(mode="json", exclude=keep_out),
            "base_path": fingerprint_name(base_path), "seed": cfg.draw_seed}


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated, slower than fp32."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes
        return False


def targets_digest(pairs: pa.Table) -> str:
    """What the fine-tuning learns from in the teacher's pairs table: a sha256 prefix of its id columns (user,
    item, target, k), not of the file, whose float scores and writer metadata may differ harmlessly."""
    import hashlib

    h = hashlib.sha256()
    for col in ("user_idx", "item_idx", "neg_item_idx", "k"):
        if col in pairs.column_names:
            h.update(col.encode())
            h.update(np.ascontiguousarray(pairs[col].to_numpy()).astype("<i8").tobytes())
    return h.hexdigest()[:16]


def _recorded(history: list[dict], event: str, key: str) -> list[str]:
    """The distinct values a history's `event` records carry under `key`, in order of first use."""
    return list(dict.fromkeys(r[key] for r in history if r.get("event") == event))


def supervisions(history: list[dict]) -> list[str]:
    """The teacher targets' digests (targets_digest) a run's (re)starts trained on, in order."""
    return _recorded(history, "supervision", "teacher_pairs")


def used_precisions(history: list[dict]) -> list[str]:
    """The compute precisions of a run's (re)starts, in order of first use."""
    return _recorded(history, "precision", "value")


def run(ctx: Context) -> dict:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from safetensors.torch import load_file

    from ..llm.models import resolve_finetune_model

    cfg, art = ctx.cfg, ctx.art
    teacher_m = art.need(A.TEACHER, "teacher pairs")
    users_m = art.need(A.USER_PROFILES, "user profiles")
    base_path = resolve_finetune_model(cfg.finetune, cfg.llm.model_cache)
    part = config_part(cfg, base_path)
    inputs = {"teacher": teacher_m["fingerprint"], "user_profiles": users_m["fingerprint"]}

    def work(fp: str) -> Output:
        ray = ctx.ray()
        if cfg.finetune.use_gpu:  # the autoscaler adds GPU nodes when there are none yet, or this names what's missing
            from ..ray_utils import accelerator_bundle, ensure_resources

            ft = cfg.finetune
            ensure_resources([accelerator_bundle({"GPU": 1, "CPU": ft.cpus_per_worker}, ft.accelerator_type)]
                             * ft.num_workers, f"finetune (num_workers={ft.num_workers}, use_gpu"
                             + (f", accelerator_type={ft.accelerator_type}" if ft.accelerator_type else "") + ")")
        table = supervision(cfg, art)
        n_valid = int(round(table.num_rows * cfg.finetune.valid_share))
        order = np.random.default_rng(cfg.draw_seed).permutation(table.num_rows)
        valid, train = table.take(pa.array(order[:n_valid])), table.take(pa.array(order[n_valid:]))
        # Ray Train's storage: the run name is the fingerprint, so a re-submitted job with the same config resumes
        # the same run, and a changed config starts a new one. It lives on the run directory's own filesystem.
        storage, fs = art.ray_train_storage()
        items = art.prepared()["items"]
        from ..llm.encoder import item_text

        iprof = art.item_profiles()
        random_items = [item_text(t, iprof.get(i)) for i, t in zip(items["item_idx"].to_pylist(),
                                                                  items["title"].to_pylist())]
        carried = carried_checkpoint(art, fp, cfg.finetune.num_workers, cfg.finetune.batch_size)
        loop_config = {"finetune": cfg.finetune.model_dump(mode="json"), "base_path": base_path,
                       "seed": cfg.draw_seed,
                       "supervision": targets_digest(art.teacher_pairs()),
                       "cf_tokens": cfg.finetune.cf_tokens, "artifacts": art if cfg.finetune.cf_tokens else None,
                       "random_items": random_items if cfg.finetune.random_negatives else None,
                       "carried": carried, "carried_supervision": carried_info(art).get("teacher_pairs"),
                       "carried_fs": None if art.run.is_local else art.run.fs}
        trainer = _trainer_class(cfg)(
            _train_loop, train_loop_config=loop_config,
            scaling_config=ScalingConfig(num_workers=cfg.finetune.num_workers, use_gpu=cfg.finetune.use_gpu,
                                         resources_per_worker={"CPU": cfg.finetune.cpus_per_worker},
                                         accelerator_type=cfg.finetune.accelerator_type if cfg.finetune.use_gpu
                                         else None),
            run_config=RunConfig(storage_path=storage, storage_filesystem=None if art.run.is_local else fs,
                                 name=f"hnlmrec-{fp}",
                                 failure_config=FailureConfig(max_failures=cfg.finetune.max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2)),
            datasets={"train": ray.data.from_arrow(train.select(["user_idx", "item_idx", "query", "positives",
                                                                  "targets"]))},
        )
        t0 = time.perf_counter()
        result = trainer.fit()
        seconds = time.perf_counter() - t0
        if result.checkpoint is None:
            raise StageError(f"fine-tuning produced no checkpoint ({result.error})")
        with result.checkpoint.as_directory() as d:
            tensors = load_file(os.path.join(d, "adapter.safetensors"))
            state = json.load(open(os.path.join(d, "state.json")))
        art.write_adapter(tensors)
        art.write_finetune_log(state["history"])
        metrics = {"steps": state["step"], "epochs_done": state["epoch"], "train_pairs": train.num_rows,
                   "valid_pairs": valid.num_rows, "seconds": seconds, "base_model": base_path,
                   "resumed": sum(1 for r in state["history"] if r.get("event") == "resumed"),
                   "final_train_loss": next((r["loss"] for r in reversed(state["history"]) if "loss" in r), None),
                   "targets_per_pair": table["targets"].type.list_size, "encoder": cfg.finetune.encoder,
                   "pairs_per_s": _pairs_per_s(state["history"], cfg.finetune.num_workers),
                   "precision": used_precisions(state["history"]),
                   "teacher_targets": supervisions(state["history"]),  # more than one: changed at a resume
                   **validate_adapter(cfg, base_path, tensors, valid, art)}
        art.write_finetune_metrics(metrics)
        art.run.delete(A.FINETUNE, CARRIED)  # its steps are in the run now
        return Output(counts={"steps": state["step"], "train_pairs": train.num_rows}, outputs=A.FINETUNE_FILES,
                      timings={"fit": seconds}, result=metrics)

    return step(ctx, A.FINETUNE, part, inputs, work, label="finetune", cached=art.finetune_metrics)


CARRIED = "carried"  # finetune/carried/: a checkpoint brought from another machine (adapter, optimiser, state)


def carried_info(art: Artifacts) -> dict:
    """The carried checkpoint's carried.json ({} when there is none): fingerprint, step, teacher targets' digest."""
    if not art.run.exists(A.FINETUNE, CARRIED, "carried.json"):
        return {}
    return json.loads(art.run.read_text(f"{A.FINETUNE}/{CARRIED}/carried.json"))


def carried_checkpoint(art: Artifacts, fp: str, workers: int, batch_size: int) -> str | None:
    """The carried checkpoint's path when it belongs to this fine-tuning run (same fingerprint), else None (a
    checkpoint of another config is never loaded). Its position in the epoch is a batch index into each worker's
    shard, which means the same only with the same workers and batch size (resources the fingerprint leaves out):
    with others it is refused by name."""
    if not (info := carried_info(art)):
        return None
    where = art.run.uri_of(A.FINETUNE, CARRIED)
    if info.get("fingerprint") != fp:
        log.warning("%s: a checkpoint of another fine-tuning run (fingerprint %s, this run %s): not used",
                    where, info.get("fingerprint"), fp)
        return None
    state = json.loads(art.run.read_text(f"{A.FINETUNE}/{CARRIED}/state.json"))
    had = (state.get("workers"), state.get("batch_size"))
    if had != (workers, batch_size):
        raise StageError(f"{where}: the carried checkpoint was trained with finetune.num_workers={had[0]} and "
                         f"finetune.batch_size={had[1]}, this run has {workers} and {batch_size}: use those, or "
                         "delete the folder to start afresh")
    return art.run.path(A.FINETUNE, CARRIED)


def _trainer_class(cfg: Config):
    """TorchTrainer; on a local Ray (started without its dashboard) without Ray Train's placement-group cleaner:
    the cleaner polls the State API, which the dashboard serves, every second, and without it can only log a
    warning each time (dozens per fine-tuning run). A local Ray's placement groups end with the process anyway."""
    from ray.train.torch import TorchTrainer

    if cfg.ray.address or os.environ.get("RAY_ADDRESS"):
        return TorchTrainer

    class LocalTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self):
            return [c for c in super()._create_default_callbacks()
                    if type(c).__name__ != "PlacementGroupCleanerCallback"]

    return LocalTorchTrainer


def validate_adapter(cfg: Config, base_path: str, tensors: dict, valid: pa.Table, art: Artifacts) -> dict:
    """Held-out loss and in-batch accuracy of the trained adapter against the untrained base."""
    import torch

    from ..llm.contrastive import in_batch_accuracy
    from ..llm.encoder import LLMEncoder, multi_positive_batch

    if valid.num_rows < 2:
        return {}
    rows = valid.slice(0, min(valid.num_rows, 64))
    cf = cf_rows(art, rows) if cfg.finetune.cf_tokens else None
    out = {}
    for name, load in (("base", False), ("tuned", True)):
        enc = LLMEncoder(base_path, cfg.finetune, cf_dim=None if cf is None else cf.shape[-1]).eval()
        if load:
            enc.load_trainable(tensors)
        texts, targets = batch_passages(rows["positives"].to_pylist(), rows["targets"].to_pylist())
        with torch.no_grad():
            loss, q, p, _, masks = multi_positive_batch(enc, enc, rows["query"].to_pylist(), texts, targets,
                                                        torch.device("cpu"), cf)
        out[f"valid_loss_{name}"] = round(float(loss), 4)
        out[f"valid_in_batch_acc_{name}"] = round(in_batch_accuracy(q, p, *masks), 4)
    return out


def _pairs_per_s(history: list[dict], workers: int) -> float | None:
    """Fine-tuning throughput of the last (re)start: pairs trained per second over all workers (rank 0's count
    times the workers: every worker trains the same batch size)."""
    last = [r for r in history if "pairs" in r]
    if not last or not last[-1]["s"]:
        return None
    return round(last[-1]["pairs"] * workers / last[-1]["s"], 2)


def cf_rows(art: Artifacts, rows: pa.Table):
    """The teacher's (user, item) CF embeddings of each row, stacked: (rows, 2, d), the CF soft tokens."""
    import torch

    t = art.teacher_embeddings()
    u = torch.as_tensor(rows["user_idx"].to_numpy().astype(np.int64))
    i = torch.as_tensor(rows["item_idx"].to_numpy().astype(np.int64))
    return torch.stack([t["users"][u], t["items"][i]], 1)


__all__ = ["run", "supervision", "batch_passages", "cf_rows"]
