"""The `profiles` stage: the LLM writes item profiles, then user profiles from each user's *training* history
(most recent first, with item titles, item profiles and the user's reviews, cut to a token budget).

Outputs: profiles/items/part-*.parquet and profiles/users/part-*.parquet, one row per id (`item:{idx}`,
`user:{idx}`) with status (ok / repaired / failed), the answer fields, the raw reply of failures and token counts.
"""

from __future__ import annotations

import logging
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from .. import artifacts as A
from .. import manifest
from ..config import Config
from ..llm import prompts
from ..llm.engines.base import build_engine
from ..llm.generate import run_generation
from . import Context, Output, step

log = logging.getLogger(__name__)


def _clip(text: str | None, n: int) -> str | None:
    if not text:
        return None
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n].rsplit(" ", 1)[0] + "..."


class TokenCounter:
    """Counts tokens with the engine's tokenizer when it is local; otherwise ~4 characters per token."""

    def __init__(self, cfg: Config):
        self.tok = None
        if cfg.llm.engine == "hf":
            from transformers import AutoTokenizer

            from ..llm.models import resolve_llm

            self.tok = AutoTokenizer.from_pretrained(resolve_llm(cfg.llm.model, cfg.llm.model_cache))

    def __call__(self, texts: list[str]) -> list[int]:
        if self.tok is None:
            return [max(1, len(t) // 4) for t in texts]
        return [len(x) for x in self.tok(texts, add_special_tokens=False)["input_ids"]]


def _reviews_by(table: pa.Table, key: str, per: int, chars: int) -> dict[int, list[str]]:
    """Up to `per` most recent non-empty reviews per key."""
    if "review" not in table.column_names or per == 0:
        return {}
    t = table.filter(pc.invert(pc.is_null(table["review"])))
    t = t.sort_by([(key, "ascending"), ("timestamp", "descending")])
    out: dict[int, list[str]] = {}
    for k, r in zip(t[key].to_pylist(), t["review"].to_pylist()):
        lst = out.setdefault(k, [])
        if len(lst) < per and r.strip():
            lst.append(_clip(r, chars))
    return out


def item_prompts(cfg: Config, items: pa.Table, train: pa.Table, template: prompts.Template
                 ) -> tuple[pa.Table, dict]:
    p = cfg.profiles
    reviews = _reviews_by(train, "item_idx", p.reviews_per_item, p.review_chars)
    rows, no_text = [], 0
    for it in items.to_pylist()[: p.max_items]:
        idx = it["item_idx"]
        empty = not (it.get("title") or it.get("description") or it.get("categories"))
        no_text += empty
        system, user = template.render(title=it.get("title"), categories=it.get("categories") or [],
                                       brand=it.get("brand"), city=it.get("city"),
                                       description=_clip(it.get("description"), 600),
                                       reviews=reviews.get(idx, []))
        rows.append({"id": f"item:{idx}", "item_idx": idx, "kind": "item_profile", "system": system, "user": user,
                     "no_text": empty})
    return pa.Table.from_pylist(rows), {"items_without_text": no_text}


def user_prompts(cfg: Config, users: pa.Table, train: pa.Table, items: pa.Table, item_profiles: dict[int, str],
                 template: prompts.Template, count_tokens: Callable[[list[str]], list[int]]
                 ) -> tuple[pa.Table, dict]:
    p = cfg.profiles
    titles = dict(zip(items["item_idx"].to_pylist(), items["title"].to_pylist()))
    t = train.sort_by([("user_idx", "ascending"), ("timestamp", "descending")])
    hist: dict[int, list[dict]] = {}
    has_review = "review" in t.column_names
    for u, i, r in zip(t["user_idx"].to_pylist(), t["item_idx"].to_pylist(),
                       t["review"].to_pylist() if has_review else [None] * t.num_rows):
        h = hist.setdefault(u, [])
        if len(h) < p.user_history:
            h.append({"title": titles.get(i), "profile": _clip(item_profiles.get(i), 120),
                      "review": _clip(r, p.review_chars // 2)})
    rows, truncated, skipped = [], 0, 0
    for u in users["user_idx"].to_pylist()[: p.max_users]:
        h = hist.get(u)
        if not h:
            skipped += 1  # no training interactions: nothing to profile from
            continue
        lines = [f"- {x['title']}: {x['profile']} | {x['review']}" for x in h]
        sizes = count_tokens(lines)
        keep, total = 0, 0
        for n in sizes:  # most recent first: drop the oldest beyond the budget
            if total + n > p.user_token_budget and keep > 0:
                break
            total += n
            keep += 1
        truncated += keep < len(h)
        system, user = template.render(history=h[:keep])
        rows.append({"id": f"user:{u}", "user_idx": u, "kind": "user_profile", "system": system, "user": user,
                     "history_len": keep})
    return pa.Table.from_pylist(rows), {"users_without_training_interactions": skipped,
                                        "users_history_cut_to_budget": truncated}


def generation_stage(ctx: Context, folder: str, table: pa.Table, template: prompts.Template,
                     keys: tuple[str, ...], extra_counts: dict, inputs: dict, part: dict) -> dict:
    """Run (or skip, or resume) one generation folder and write its manifest."""
    cfg, art = ctx.cfg, ctx.art
    engine = build_engine(cfg.llm)
    part = {"llm": llm_identity(cfg), "template": template.digest, **part,
            **({"llm_seed": cfg.llm_seed} if cfg.llm_seed is not None else {})}  # another draw: another fingerprint

    def work(fp: str) -> Output:
        if table.num_rows == 0:
            return Output(counts={"rows": 0, "status": {}, **extra_counts}, result={"rows": 0, **extra_counts})
        timings = manifest.Timings()
        ctx.ray()
        with timings("generate"):
            # Similar lengths batch together: less padding, faster generation.
            order = pc.sort_indices(pc.utf8_length(table["user"]))
            counts = run_generation(ctx.run, folder, table.take(order), engine, cfg.llm, cfg.draw_seed,
                                    key_columns=keys)
        status = art.status_counts(folder)
        return Output(counts={"rows": sum(status.values()), "status": status, "this_run": counts.as_dict(),
                              **extra_counts}, timings=timings,
                      extra={"engine": engine.describe(), "template": template.path})

    return step(ctx, folder, part, inputs, work, resumable=True)


def llm_identity(cfg: Config) -> dict:
    """The LLM settings that change answers (not resources such as batch size or actor count, nor where and how
    an endpoint is reached: a server moved to another URL, or given other qps or timeouts, answers the same)."""
    resources = {k: True for k in ("concurrency", "num_cpus", "num_gpus", "threads", "shard_rows", "batch_size",
                                   "max_failure_share")}
    resources["http"] = {"url", "api_key_env", "qps", "concurrency", "max_retries", "retry_wait_s", "max_wait_s",
                         "timeout_s"}
    return cfg.llm.model_dump(mode="json", exclude=resources)


def text_profiles(ctx: Context, items: pa.Table, inputs: dict, part: dict) -> dict:
    """Item profiles taken from the items' own text (no LLM): same shards and columns, status ok."""

    def work(fp: str) -> Output:
        rows = []
        for it in items.to_pylist()[: ctx.cfg.profiles.max_items]:
            text = ". ".join(str(x) for x in (it.get("title"), ", ".join(it.get("categories") or []),
                                              _clip(it.get("description"), 300)) if x)
            rows.append({"id": f"item:{it['item_idx']}", "item_idx": it["item_idx"], "no_text": not text,
                         "status": "ok" if text else "failed", "attempts": 0,
                         "error": None if text else "the item has no text", "raw": None, "prompt_tokens": 0,
                         "gen_tokens": 0, "truncated": False, "summarization": _clip(text, 400) or None,
                         "reasoning": "the item's own text (profiles.item_source: text)"})
        writer = ctx.art.shard_writer(A.ITEM_PROFILES, max(1, len(rows)))
        writer.add(rows)
        writer.close()
        return Output(counts={"rows": len(rows), "status": ctx.art.status_counts(A.ITEM_PROFILES),
                              "source": "item text"})

    return step(ctx, A.ITEM_PROFILES, {**part, "item_source": "text"}, inputs, work, resumable=True,
                label="profiles-items")


def text_user_profiles(ctx: Context, data: dict[str, pa.Table], inputs: dict, part: dict) -> dict:
    """User profiles from the user's own training history (no LLM): the titles of their `user_history` most
    recent training items, most recent first, cut to ~4 characters per token of `user_token_budget`."""
    p = ctx.cfg.profiles

    def work(fp: str) -> Output:
        titles = dict(zip(data["items"]["item_idx"].to_pylist(), data["items"]["title"].to_pylist()))
        t = data["train"].sort_by([("user_idx", "ascending"), ("timestamp", "descending")])
        hist: dict[int, list[str]] = {}
        for u, i in zip(t["user_idx"].to_pylist(), t["item_idx"].to_pylist()):
            h = hist.setdefault(u, [])
            if len(h) < p.user_history:
                h.append(titles.get(i) or f"item {i}")
        rows, skipped = [], 0
        for u in data["users"]["user_idx"].to_pylist()[: p.max_users]:
            if u not in hist:
                skipped += 1  # no training interactions: nothing to profile from
                continue
            text = _clip("Recently bought: " + "; ".join(hist[u]) + ".", 4 * p.user_token_budget)
            rows.append({"id": f"user:{u}", "user_idx": u, "history_len": len(hist[u]), "status": "ok",
                         "attempts": 0, "error": None, "raw": None, "prompt_tokens": 0, "gen_tokens": 0,
                         "truncated": False, "summarization": text,
                         "reasoning": "the titles of the user's training items (profiles.user_source: text)"})
        writer = ctx.art.shard_writer(A.USER_PROFILES, max(1, len(rows)))
        writer.add(rows)
        writer.close()
        return Output(counts={"rows": len(rows), "status": ctx.art.status_counts(A.USER_PROFILES),
                              "source": "training item titles", "users_without_training_interactions": skipped})

    return step(ctx, A.USER_PROFILES, {**part, "user_source": "text"}, inputs, work, resumable=True,
                label="profiles-users")


def run(ctx: Context) -> dict:
    cfg, art = ctx.cfg, ctx.art
    prep = art.need(A.PREPARED, "prepared data")
    data = art.prepared()
    domain = prompts.domain_for(cfg.llm.domain, cfg.data.format)
    t_items = prompts.load("item_profile", domain, cfg.llm.prompts_dir)
    t_users = prompts.load("user_profile", domain, cfg.llm.prompts_dir)
    inputs = {"prepared": prep["fingerprint"]}
    part = {"profiles": cfg.profiles.model_dump(mode="json")}
    if cfg.profiles.item_source == "text":
        out = {"items": text_profiles(ctx, data["items"], inputs, part)}
    else:
        table, extra = item_prompts(cfg, data["items"], data["train"], t_items)
        out = {"items": generation_stage(ctx, A.ITEM_PROFILES, table, t_items, ("item_idx", "no_text"), extra,
                                         inputs, part)}
    if cfg.profiles.user_source == "text":
        out["users"] = text_user_profiles(ctx, data, {**inputs, "item_profiles": art.fingerprint(A.ITEM_PROFILES)},
                                          part)
        return out
    table, extra = user_prompts(cfg, data["users"], data["train"], data["items"], art.item_profiles(), t_users,
                                TokenCounter(cfg))
    out["users"] = generation_stage(ctx, A.USER_PROFILES, table, t_users, ("user_idx", "history_len"), extra,
                                    {**inputs, "item_profiles": art.fingerprint(A.ITEM_PROFILES)}, part)
    return out
