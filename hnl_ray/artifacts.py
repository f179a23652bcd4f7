"""The run directory's layout: every artifact the stages exchange, by name, with its typed loader and writer.

This is the interface between stages, and the only module that spells a path under the run directory. Loaders
read through the run's pyarrow filesystem (local, s3://, gs://, or any `pyarrow.fs.FileSystem` object), so they
work unchanged inside Ray actors and workers: hand them the `Artifacts` (it pickles), never a local path.

    <run-dir>/prepared/        train/valid/test/items/users.parquet, stats.json            (prepare)
    <run-dir>/profiles/items/  part-*.parquet: item profiles                               (profiles)
    <run-dir>/profiles/users/  part-*.parquet: user profiles                               (profiles)
    <run-dir>/negatives/       part-*.parquet: method-1 hard negatives                     (negatives)
    <run-dir>/embeddings/      items.parquet, negatives.parquet: text vectors, grounding   (embed)
    <run-dir>/teacher/         pairs.parquet, embeddings.safetensors                       (teacher)
    <run-dir>/finetune/        adapter.safetensors, metrics.json, log.jsonl, ray/          (finetune)
    <run-dir>/hardneg/         part-*.parquet: HNLMRec pair vectors (+ neighbours),       (hardneg)
                               items.parquet: the catalogue in the fine-tuned model's space
    <run-dir>/hardneg-base/    the same from the model before fine-tuning (`base` control) (hardneg)
    <run-dir>/cf/<run>/        one CF run (see cf/trainer.py for its files)                (train, teacher)
    <run-dir>/tune/<sweep>/    a Ray Tune sweep                                            (tune)
    <run-dir>/report.md, report/                                                           (report)

Every stage folder holds a `manifest.json` (see manifest.py) written when the stage completes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import manifest
from .arrays import vector_column, vectors
from .errors import MissingInput
from .storage import RunDir, ShardWriter, read_shards

if TYPE_CHECKING:
    import torch

    from .cf.data import CFData

# Stage folders (each with a manifest.json).
PREPARED = "prepared"
ITEM_PROFILES = "profiles/items"
USER_PROFILES = "profiles/users"
NEGATIVES = "negatives"
EMBEDDINGS = "embeddings"
TEACHER = "teacher"
FINETUNE = "finetune"
HARDNEG = "hardneg"
HARDNEG_BASE = "hardneg-base"
CF = "cf"
TUNE = "tune"
REPORT = "report"

SPLITS = ("train", "valid", "test")
PREPARED_TABLES = [f"{n}.parquet" for n in (*SPLITS, "items", "users")]
PREPARED_STATS = "stats.json"
EMBEDDING_FILES = ["items.parquet", "negatives.parquet"]
TEACHER_FILES = ["pairs.parquet", "embeddings.safetensors"]
FINETUNE_FILES = ["adapter.safetensors", "metrics.json", "log.jsonl"]
HARDNEG_FILES = ["items.parquet"]

# Which stage makes each folder: for the "run `hnl-ray X` first" messages.
MADE_BY = {PREPARED: "prepare", ITEM_PROFILES: "profiles", USER_PROFILES: "profiles", NEGATIVES: "negatives",
           EMBEDDINGS: "embed", TEACHER: "teacher", FINETUNE: "finetune", HARDNEG: "hardneg",
           HARDNEG_BASE: "hardneg"}


class Artifacts:
    """Typed access to one run directory's artifacts."""

    def __init__(self, run: RunDir | str):
        self.run = run if isinstance(run, RunDir) else RunDir(run)

    def __repr__(self) -> str:
        return f"Artifacts({self.run.uri!r})"

    def uri(self, folder: str, name: str | None = None) -> str:
        return self.run.uri_of(folder, name) if name else self.run.uri_of(folder)

    # where each named file is, for messages (the files themselves are read and written below)
    def teacher_pairs_uri(self) -> str:
        return self.uri(TEACHER, "pairs.parquet")

    def negative_embeddings_uri(self) -> str:
        return self.uri(EMBEDDINGS, "negatives.parquet")

    def items_uri(self, folder: str) -> str:
        """The catalogue's vectors of `folder` (embeddings/, hardneg/ or hardneg-base/)."""
        return self.uri(folder, "items.parquet")

    # -- manifests ----------------------------------------------------------------------------------------------
    def manifest(self, folder: str) -> dict | None:
        return manifest.load(self.run, folder)

    def fingerprint(self, folder: str) -> str | None:
        m = self.manifest(folder)
        return m["fingerprint"] if m else None

    def need(self, folder: str, what: str | None = None) -> dict:
        """The manifest of an upstream stage, or an error naming the command that makes it."""
        m = self.manifest(folder)
        if m is None:
            raise MissingInput(f"{what or folder} not found in {self.run.uri_of(folder)}: run "
                               f"`hnl-ray {MADE_BY.get(folder, folder)}` first (same --config and --run-dir)")
        return m

    # -- prepared data ------------------------------------------------------------------------------------------
    def write_prepared(self, tables: dict[str, pa.Table]) -> None:
        for name, table in tables.items():
            self.run.write_parquet(f"{PREPARED}/{name}.parquet", table)

    def prepared_digest(self) -> str | None:
        return manifest.files_digest(self.run, PREPARED, PREPARED_TABLES)

    def write_stats(self, stats: dict) -> None:
        self.run.write_json(f"{PREPARED}/{PREPARED_STATS}", stats)

    def stats(self) -> dict:
        if not self.run.exists(PREPARED, PREPARED_STATS):
            raise MissingInput(f"{self.run.uri_of(PREPARED)} has no prepared data: run `hnl-ray prepare` first "
                               "(with the same --config and --run-dir)")
        return self.run.read_json(f"{PREPARED}/{PREPARED_STATS}")

    def table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """One prepared table: train, valid, test, items or users."""
        return self.run.read_parquet(f"{PREPARED}/{name}.parquet", columns=columns)

    def prepared(self) -> dict[str, pa.Table]:
        """The tables the LLM stages read: train, items, users."""
        self.need(PREPARED, "prepared data")
        return {name: self.table(name) for name in ("train", "items", "users")}

    def cf_data(self) -> CFData:
        """The prepared splits as contiguous-id arrays for CF training."""
        from .cf.data import CFData

        stats = self.stats()
        parts = {}
        for split in SPLITS:
            t = self.table(split, columns=["user_idx", "item_idx"])
            parts[split] = (t["user_idx"].to_numpy().astype(np.int64), t["item_idx"].to_numpy().astype(np.int64))
        return CFData(n_users=int(stats["users"]), n_items=int(stats["items"]), **parts)

    # -- shard folders: profiles, negatives, hardneg ------------------------------------------------------------
    def shards(self, folder: str, columns: list[str] | None = None) -> pa.Table | None:
        return read_shards(self.run, folder, columns=columns)

    def shard_writer(self, folder: str, shard_rows: int) -> ShardWriter:
        return ShardWriter(self.run, folder, shard_rows)

    def shard_bytes(self, folder: str) -> int:
        return sum(self.run.size(folder, n) for n in self.run.list(folder, suffix=".parquet"))

    def status_counts(self, folder: str) -> dict[str, int]:
        """How many rows of a generation folder are ok / repaired / failed."""
        done = self.shards(folder, columns=["status"])
        if done is None:
            return {}
        return {v["values"]: v["counts"] for v in pc.value_counts(done["status"]).to_pylist()}

    def profile_texts(self, folder: str, key: str) -> dict[int, str]:
        """idx -> summarization of the valid profiles in ITEM_PROFILES (key item_idx) or USER_PROFILES."""
        t = self.shards(folder, columns=[key, "status", "summarization"])
        if t is None:
            return {}
        t = t.filter(pc.not_equal(t["status"], "failed"))
        return dict(zip(t[key].to_pylist(), t["summarization"].to_pylist()))

    def item_profiles(self) -> dict[int, str]:
        return self.profile_texts(ITEM_PROFILES, "item_idx")

    def user_profiles(self) -> dict[int, str]:
        return self.profile_texts(USER_PROFILES, "user_idx")

    def negatives(self, valid_only: bool = False) -> pa.Table | None:
        """The method-1 hard negatives the LLM wrote (None before the stage ran)."""
        t = self.shards(NEGATIVES)
        if t is not None and valid_only:
            t = t.filter(pc.not_equal(t["status"], "failed"))
        return t

    # -- embeddings ---------------------------------------------------------------------------------------------
    def write_item_vectors(self, item_idx: pa.Array, vecs: np.ndarray) -> None:
        self.run.write_parquet(f"{EMBEDDINGS}/items.parquet", pa.table({"item_idx": item_idx,
                                                                        "vector": vector_column(vecs)}))

    def item_vectors(self) -> np.ndarray:
        """(n_items, d) text embeddings of the catalog."""
        return vectors(self.run.read_parquet(f"{EMBEDDINGS}/items.parquet")["vector"])

    def write_negative_embeddings(self, table: pa.Table) -> None:
        self.run.write_parquet(f"{EMBEDDINGS}/negatives.parquet", table)

    def negative_embeddings(self) -> pa.Table | None:
        """Method-1 negatives embedded and grounded (see stages/embed.py for the columns); None before embed."""
        if not self.run.exists(EMBEDDINGS, "negatives.parquet") or self.manifest(EMBEDDINGS) is None:
            return None
        return self.run.read_parquet(f"{EMBEDDINGS}/negatives.parquet")

    # -- teacher ------------------------------------------------------------------------------------------------
    def write_teacher_pairs(self, table: pa.Table) -> None:
        self.run.write_parquet(f"{TEACHER}/pairs.parquet", table)

    def teacher_pairs(self, columns: list[str] | None = None) -> pa.Table | None:
        """(user_idx, item_idx, neg_item_idx, scores) of the teacher's mined pairs; None before the teacher."""
        if not self.run.exists(TEACHER, "pairs.parquet") or self.manifest(TEACHER) is None:
            return None
        return self.run.read_parquet(f"{TEACHER}/pairs.parquet", columns=columns)

    def write_teacher_embeddings(self, users: torch.Tensor, items: torch.Tensor) -> None:
        from safetensors.torch import save

        self.run.write_bytes(f"{TEACHER}/embeddings.safetensors", save({"users": users.contiguous(),
                                                                          "items": items.contiguous()}))

    def teacher_embeddings(self) -> dict[str, torch.Tensor]:
        """The teacher's final CF embeddings: {"users": (n_users, d), "items": (n_items, d)}."""
        from safetensors.torch import load

        return load(self.run.read_bytes(f"{TEACHER}/embeddings.safetensors"))

    # -- finetune -----------------------------------------------------------------------------------------------
    def write_adapter(self, tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save

        self.run.write_bytes(f"{FINETUNE}/adapter.safetensors", save(tensors))

    def adapter(self) -> dict[str, torch.Tensor]:
        """The fine-tuned LoRA + projection weights."""
        from safetensors.torch import load

        return load(self.run.read_bytes(f"{FINETUNE}/adapter.safetensors"))

    def write_finetune_log(self, history: list[dict]) -> None:
        self.run.write_text(f"{FINETUNE}/log.jsonl", "".join(json.dumps(r) + "\n" for r in history))

    def write_finetune_metrics(self, metrics: dict) -> None:
        self.run.write_json(f"{FINETUNE}/metrics.json", metrics)

    def finetune_metrics(self) -> dict:
        return self.run.read_json(f"{FINETUNE}/metrics.json")

    def ray_train_storage(self) -> tuple[str, object]:
        """(storage_path, storage_filesystem) for Ray Train's RunConfig: the run's own filesystem, so a
        re-submitted job resumes from the same checkpoints wherever the run directory lives."""
        self.run.mkdir(FINETUNE, "ray")
        return self.run.path(FINETUNE, "ray"), self.run.fs

    # -- CF runs ------------------------------------------------------------------------------------------------
    def cf_folder(self, name: str) -> str:
        return f"{CF}/{name}"

    def cf_run(self, name: str) -> RunDir:
        """The folder one CF run writes into (the trainer's output directory)."""
        return self.run.sub(CF, name)

    def cf_names(self) -> list[str]:
        return self.run.subdirs(CF)

    def cf_metrics(self, name: str) -> dict | None:
        """metrics.json of a finished CF run (None when unfinished)."""
        if not self.run.exists(CF, name, "metrics.json") or self.manifest(self.cf_folder(name)) is None:
            return None
        return self.run.read_json(f"{CF}/{name}/metrics.json")

    def cf_log(self, name: str) -> list[dict] | None:
        if not self.run.exists(CF, name, "log.jsonl"):
            return None
        return [json.loads(x) for x in self.run.read_text(f"{CF}/{name}/log.jsonl").splitlines() if x.strip()]

    def cf_ranks(self, name: str, split: str = "test") -> pa.Table | None:
        if not self.run.exists(CF, name, f"ranks_{split}.parquet"):
            return None
        return self.run.read_parquet(f"{CF}/{name}/ranks_{split}.parquet")

    # -- hardneg ------------------------------------------------------------------------------------------------
    def hardneg_vectors(self, columns: list[str] | None = None, folder: str = HARDNEG) -> pa.Table | None:
        """HNLMRec's (id, user_idx, item_idx, vector[, neighbours]) rows, vectors float16; None before the stage
        ran. `folder`: HARDNEG, or HARDNEG_BASE (the model before fine-tuning)."""
        t = self.shards(folder, columns=columns)
        return None if t is None or self.manifest(folder) is None else t

    def hardneg_items(self, folder: str = HARDNEG) -> pa.Table | None:
        """(item_idx, vector): the catalogue encoded by the model of `folder`; None when absent."""
        if not self.run.exists(folder, "items.parquet"):
            return None
        return self.run.read_parquet(f"{folder}/items.parquet")

    def item_vector_table(self) -> pa.Table | None:
        """(item_idx, vector) of the embed stage's catalogue; None before the stage ran."""
        if not self.run.exists(EMBEDDINGS, "items.parquet") or self.manifest(EMBEDDINGS) is None:
            return None
        return self.run.read_parquet(f"{EMBEDDINGS}/items.parquet")

    def has_hardneg_items(self, folder: str = HARDNEG) -> bool:
        return self.run.exists(folder, "items.parquet")

    def write_hardneg_items(self, item_idx: np.ndarray, vecs: np.ndarray, folder: str = HARDNEG) -> None:
        """The catalogue encoded by the model of `folder`, with the pooling and passage format of fine-tuning."""
        self.run.write_parquet(f"{folder}/items.parquet", pa.table({
            "item_idx": pa.array(np.asarray(item_idx, np.int32)), "vector": vector_column(vecs)}))

    def hardneg_item_matrix(self, n_items: int, folder: str = HARDNEG) -> np.ndarray:
        """(n_items, d) float32 of `hardneg_items` (row = item_idx); an error naming the stage when missing."""
        t = self.hardneg_items(folder)
        if t is None:
            raise MissingInput(f"the catalogue in the model's space {self.run.uri_of(folder, 'items.parquet')} "
                               f"not found: run `hnl-ray hardneg` first (same --config and --run-dir)")
        v = vectors(t["vector"])
        out = np.zeros((n_items, v.shape[1]), np.float32)
        out[t["item_idx"].to_numpy()] = v
        return out

    # -- tune and report ----------------------------------------------------------------------------------------
    def tune_folder(self, name: str) -> str:
        return f"{TUNE}/{name}"

    def tune_names(self) -> list[str]:
        return self.run.subdirs(TUNE)

    def tune_has(self, sweep: str, name: str) -> bool:
        return self.run.exists(TUNE, sweep, name)

    def tune_dir(self, sweep: str) -> str:
        """A sweep's folder, as a URI for messages."""
        return self.run.uri_of(TUNE, sweep)

    def tune_storage(self, sweep: str) -> tuple[str, object]:
        """(storage_path, storage_filesystem) for Ray Tune's RunConfig and Tuner.restore: the run's own filesystem,
        so trial checkpoints and the experiment state live in the run directory wherever it is (s3://, NFS)."""
        self.run.mkdir(TUNE, sweep)
        return self.run.path(TUNE, sweep), self.run.fs

    def tune_file(self, sweep: str, name: str) -> str | None:
        """The text of a sweep's output file (results.md, best_test.json, ...), None when absent."""
        return self.run.read_text(f"{TUNE}/{sweep}/{name}") if self.run.exists(TUNE, sweep, name) else None

    def write_tune_file(self, sweep: str, name: str, data: str | bytes | dict) -> None:
        _write(self.run, f"{TUNE}/{sweep}/{name}", data)

    def write_report(self, text: str, files: dict[str, bytes | str | dict]) -> str:
        """report.md and the files it links (report/<name>); returns report.md's URI."""
        for name, data in files.items():
            _write(self.run, f"{REPORT}/{name}", data)
        self.run.write_text(f"{REPORT}.md", text)
        return self.run.uri_of(f"{REPORT}.md")

    def report_uri(self) -> str | None:
        return self.run.uri_of(f"{REPORT}.md") if self.run.exists(f"{REPORT}.md") else None


def _write(run: RunDir, rel: str, data: str | bytes | dict) -> None:
    if isinstance(data, bytes):
        run.write_bytes(rel, data)
    elif isinstance(data, str):
        run.write_text(rel, data)
    else:
        run.write_json(rel, data)
