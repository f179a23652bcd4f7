"""Resumable, validated generation: prompts -> engine (a Ray Data pipeline) -> parsed answers in Parquet shards.

Every prompt row has a deterministic id. Shards are written atomically as answers stream in; a re-run reads the ids
already written and generates only the missing ones (an anti-join), so an interrupted run never duplicates an id
and never redoes finished work. Answers that fail validation are retried (new seed, `retry_temperature`) and are
only written once final: valid, or failed with the reason and the raw reply. Nothing is invented in their place.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config.llm import LLMConfig
from ..errors import HnlRayError
from ..storage import RunDir, ShardWriter, read_shards
from .engines.base import Engine, EngineError
from .parse import FAILED, validate
from .schemas import SCHEMAS

log = logging.getLogger(__name__)


class GenerationError(HnlRayError):
    pass


def dataset_in_blocks(table: pa.Table, rows: int):
    """A Ray Dataset of `table` in blocks of `rows`. Ray Data emits a map's output block only when its task ends or
    the block outgrows ~128 MiB, so one input block (what `from_arrow` makes of one table) would return every
    answer at the very end: nothing could be written, and nothing resumed, before hours of generation finished."""
    import ray

    rows = max(1, rows)
    return ray.data.from_arrow([table.slice(o, rows) for o in range(0, table.num_rows, rows)] or [table])


@dataclass
class GenerationCounts:
    requested: int = 0
    already_done: int = 0
    generated: int = 0
    ok: int = 0
    repaired: int = 0
    failed: int = 0
    retried: int = 0
    truncated_prompts: int = 0
    engine_errors: int = 0
    prompt_tokens: int = 0
    gen_tokens: int = 0
    seconds: float = 0.0
    failure_reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["tokens_per_s"] = round(self.gen_tokens / self.seconds, 2) if self.seconds else None
        return d


def run_generation(run: RunDir, folder: str, prompts: pa.Table, engine: Engine, cfg: LLMConfig, seed: int,
                   key_columns: tuple[str, ...] = ()) -> GenerationCounts:
    """Generate answers for the prompt rows (id, kind, system, prompt, key columns) whose ids are not yet in
    `folder`, writing shards there. Returns counts of this call."""

    counts = GenerationCounts(requested=prompts.num_rows)
    done = read_shards(run, folder, columns=["id"])
    todo = prompts
    if done is not None and done.num_rows:
        todo = prompts.filter(pc.invert(pc.is_in(prompts["id"], value_set=done["id"].combine_chunks())))
    counts.already_done = prompts.num_rows - todo.num_rows
    if todo.num_rows == 0:
        return counts
    engine.check()
    writer = ShardWriter(run, folder, cfg.shard_rows)
    fields = list(SCHEMAS[todo["kind"][0].as_py()].model_fields)
    t0 = time.perf_counter()
    for attempt in range(cfg.retries + 1):
        if todo.num_rows == 0:
            break
        temperature = cfg.temperature if attempt == 0 else cfg.retry_temperature
        batch_in = todo.append_column("temperature", pa.array(np.full(todo.num_rows, temperature, np.float32)))
        batch_in = batch_in.append_column("seed", pa.array(np.full(todo.num_rows, seed + 7919 * attempt,
                                                                   np.int64)))
        ds = engine.generate(dataset_in_blocks(batch_in, max(cfg.shard_rows, cfg.batch_size)))
        retry: list[dict] = []
        try:
            for out in ds.iter_batches(batch_size=cfg.shard_rows, batch_format="pyarrow"):
                final = []
                for row in out.to_pylist():
                    counts.generated += attempt == 0
                    counts.prompt_tokens += int(row.get("prompt_tokens") or 0) if attempt == 0 else 0
                    counts.gen_tokens += int(row.get("gen_tokens") or 0)
                    counts.truncated_prompts += bool(row.get("truncated")) and attempt == 0
                    if row.get("error"):
                        counts.engine_errors += 1
                        parsed_status, value, reason = FAILED, None, f"engine error: {row['error']}"
                    else:
                        p = validate(row["kind"], row.get("text") or "")
                        parsed_status, value, reason = p.status, p.value, p.error
                    if parsed_status == FAILED and attempt < cfg.retries:
                        retry.append({k: row[k] for k in todo.column_names})
                        continue
                    rec = {k: row[k] for k in ("id", *key_columns)}
                    rec.update({"status": parsed_status, "attempts": attempt + 1, "error": reason,
                                "raw": row.get("text") if parsed_status == FAILED else None,
                                "prompt_tokens": int(row.get("prompt_tokens") or 0),
                                "gen_tokens": int(row.get("gen_tokens") or 0),
                                "truncated": bool(row.get("truncated"))})
                    rec.update({f: (value or {}).get(f) for f in fields})
                    final.append(rec)
                    if parsed_status == FAILED:
                        counts.failed += 1
                        key = (reason or "").split(":")[0][:60]
                        counts.failure_reasons[key] = counts.failure_reasons.get(key, 0) + 1
                    elif parsed_status == "repaired":
                        counts.repaired += 1
                    else:
                        counts.ok += 1
                writer.add(final)
        except EngineError:
            raise
        except Exception as exc:  # the pipeline itself failed (e.g. an unreachable endpoint after retries)
            writer.close()  # what finished is kept; the manifest is not written, so the stage is not complete
            raise GenerationError(f"{engine.name} engine failed while generating {folder}: "
                                  f"{_root_cause(exc)}") from exc
        counts.retried += len(retry)
        todo = pa.Table.from_pylist(retry, schema=todo.schema) if retry else todo.slice(0, 0)
    writer.close()
    counts.seconds = time.perf_counter() - t0
    return counts


def _root_cause(exc: BaseException) -> str:
    msg = str(exc)
    for marker in ("Reached maximum retries", "RuntimeError:"):
        if marker in msg:
            msg = msg[msg.index(marker):]
            break
    return msg.strip().splitlines()[0][:500] if msg.strip() else type(exc).__name__
