"""Resumable, validated generation: prompts -> engine (a Ray Data pipeline) -> parsed answers in Parquet shards.

Every prompt row has a deterministic id. Shards are written atomically as answers stream in; a re-run reads the ids
already written and generates only the missing ones (an anti-join), so an interrupted run never duplicates an id
and never redoes finished work. Answers that fail validation, or were cut off by the token limit, are retried (new
seed, `retry_temperature`) and are only written once final: valid, truncated (kept, marked, from the last
attempt), or failed with the reason and the raw reply. Nothing is invented in their place.

A request the engine could not get answered (an endpoint that kept failing after its own retries) fails its row
only, with the reason; it is not retried with a new seed. When more than `llm.max_failure_share` of the rows
failed, the stage fails with a summary of the reasons (`FailureShareExceeded`) and is not marked complete; its
re-run asks again for the rows whose request failed and keeps every other answer.
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
from .parse import FAILED, TRUNCATED, validate
from .schemas import SCHEMAS

log = logging.getLogger(__name__)


class GenerationError(HnlRayError):
    pass


class FailureShareExceeded(GenerationError):
    """Too many rows of a stage failed: the stage is not complete (its answers are kept for the re-run)."""


ENGINE_ERROR = "engine error: "  # prefix of the reason of a row whose request failed (re-asked on resume)


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
    truncated: int = 0
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
    forget_engine_failures(run, folder)
    done = read_shards(run, folder, columns=["id"])
    todo = prompts
    if done is not None and done.num_rows:
        todo = prompts.filter(pc.invert(pc.is_in(prompts["id"], value_set=done["id"].combine_chunks())))
    counts.already_done = prompts.num_rows - todo.num_rows
    if todo.num_rows == 0:
        check_failure_share(run, folder, prompts, cfg)
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
        ds = engine.generate(dataset_in_blocks(batch_in, engine.block_rows(cfg)))
        retry: list[dict] = []
        try:
            # Blocks as they come (no re-batching, no prefetch): each answer reaches the writer as soon as its
            # block does, and a shard is written as soon as shard_rows answers are in.
            for out in ds.iter_batches(batch_size=None, prefetch_batches=0, batch_format="pyarrow"):
                final = []
                for row in out.to_pylist():
                    counts.generated += attempt == 0
                    counts.prompt_tokens += int(row.get("prompt_tokens") or 0) if attempt == 0 else 0
                    counts.gen_tokens += int(row.get("gen_tokens") or 0)
                    counts.truncated_prompts += bool(row.get("truncated")) and attempt == 0
                    engine_failed = bool(row.get("error"))
                    if engine_failed:  # the engine retried already: a new seed would not help
                        counts.engine_errors += 1
                        parsed_status, value, reason = FAILED, None, ENGINE_ERROR + str(row["error"])
                    else:
                        p = validate(row["kind"], row.get("text") or "", cut_off=_cut_off(row, cfg))
                        parsed_status, value, reason = p.status, p.value, p.error
                    if parsed_status in (FAILED, TRUNCATED) and attempt < cfg.retries and not engine_failed:
                        retry.append({k: row[k] for k in todo.column_names})
                        continue
                    rec = {k: row[k] for k in ("id", *key_columns)}
                    rec.update({"status": parsed_status, "attempts": attempt + 1, "error": reason,
                                "raw": row.get("text") if parsed_status in (FAILED, TRUNCATED) else None,
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
                    elif parsed_status == TRUNCATED:
                        counts.truncated += 1
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
    check_failure_share(run, folder, prompts, cfg, counts)
    return counts


def _cut_off(row: dict, cfg: LLMConfig) -> bool:
    """The engine stopped at the token limit: its finish_reason says so, or (engines that do not report one) it
    generated max_new_tokens."""
    finish = row.get("finish_reason")
    if finish is not None:
        return finish == "length"
    return int(row.get("gen_tokens") or 0) >= cfg.max_new_tokens


def forget_engine_failures(run: RunDir, folder: str) -> int:
    """Drop, from an unfinished folder's shards, the rows whose request failed, so that this run asks again;
    each shard is rewritten atomically (a crash in between only means those rows are asked again). A shard that
    cannot be read (cut short by a full disk, damaged by a copy) is deleted with a message: its rows are asked
    again too."""
    dropped = 0
    for name in [n for n in run.list(folder, suffix=".parquet") if n.startswith("part-")]:
        path = f"{folder}/{name}"
        try:
            t = run.read_parquet(path)
        except (pa.ArrowInvalid, OSError) as exc:
            log.warning("%s/%s cannot be read (%s): deleted; its rows are generated again", folder, name,
                        str(exc).splitlines()[0][:200])
            run.delete(path)
            continue
        if "error" not in t.column_names:
            continue
        failed = pc.fill_null(pc.starts_with(pc.cast(t["error"], pa.string()), ENGINE_ERROR), False)
        n = pc.sum(failed).as_py() or 0
        if n == 0:
            continue
        kept = t.filter(pc.invert(failed))
        if kept.num_rows:
            run.write_parquet(path, kept)
        else:
            run.delete(path)
        dropped += n
    if dropped:
        log.info("%s: asking again for %d rows whose request failed in an earlier run", folder, dropped)
    return dropped


def check_failure_share(run: RunDir, folder: str, prompts: pa.Table, cfg: LLMConfig,
                        counts: GenerationCounts | None = None) -> None:
    """Fail the stage (not marked complete) when more than llm.max_failure_share of its rows failed."""
    t = read_shards(run, folder, columns=["id", "status", "error"])
    if t is None or t.num_rows == 0:
        return
    t = t.filter(pc.is_in(t["id"], value_set=prompts["id"].combine_chunks()))
    failed = t.filter(pc.equal(t["status"], FAILED))
    share = failed.num_rows / max(1, prompts.num_rows)
    if failed.num_rows == 0 or share <= cfg.max_failure_share:
        return
    reasons: dict[str, int] = {}
    for r in failed["error"].to_pylist():
        key = _reason_key(r)
        reasons[key] = reasons.get(key, 0) + 1
    top = "; ".join(f"{n} x {k}" for k, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:5])
    requests = sum(1 for r in failed["error"].to_pylist() if (r or "").startswith(ENGINE_ERROR))
    raise FailureShareExceeded(
        f"{folder}: {failed.num_rows} of {prompts.num_rows} rows failed ({share:.0%} > llm.max_failure_share "
        f"{cfg.max_failure_share:.0%}); reasons: {top}. The stage is not marked complete and the answers that "
        f"came back are kept: a re-run asks again for the {requests} rows whose request failed; the "
        f"{failed.num_rows - requests} answers that failed validation stay failed unless the config changes "
        "(model, prompts, llm.max_failure_share) or --force.")


def _reason_key(reason: str | None) -> str:
    """A failure reason without row-specific details, for counting (never contains a prompt)."""
    text = (reason or "unknown").replace(ENGINE_ERROR, "")
    return text.split("; gave up")[0][:120]


def _root_cause(exc: BaseException) -> str:
    msg = str(exc)
    for marker in ("Reached maximum retries", "RuntimeError:"):
        if marker in msg:
            msg = msg[msg.index(marker):]
            break
    return msg.strip().splitlines()[0][:500] if msg.strip() else type(exc).__name__
