"""The `negatives` stage (method 1): for each training (user, item) pair, or a seeded sample of
`negatives.pairs_per_user` pairs per user, the LLM names K hard negatives: items that look close to what the user
likes but that the user would not want. Ids are `pair:{user}:{item}:{k}`; the answers go to negatives/part-*.

The embed stage embeds these descriptions and grounds them to catalog items.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from .. import artifacts as A
from ..config import Config
from ..llm import prompts
from . import Context
from .profiles import generation_stage

log = logging.getLogger(__name__)


def sample_pairs(users: np.ndarray, items: np.ndarray, per_user: int | None, seed: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """All training pairs, or `per_user` of each user's pairs chosen at random (seeded), vectorised."""
    if per_user is None:
        return users, items
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(users)), users))
    us = users[order]
    starts = np.r_[0, np.flatnonzero(us[1:] != us[:-1]) + 1]
    rank = np.arange(len(us)) - np.repeat(starts, np.diff(np.r_[starts, len(us)]))
    keep = order[rank < per_user]
    keep.sort()
    return users[keep], items[keep]


def pair_prompts(cfg: Config, train: pa.Table, items: pa.Table, user_profiles: dict[int, str],
                 item_profiles: dict[int, str], template: prompts.Template) -> tuple[pa.Table, dict]:
    u, i = sample_pairs(train["user_idx"].to_numpy(), train["item_idx"].to_numpy(), cfg.negatives.pairs_per_user,
                        cfg.draw_seed)
    titles = dict(zip(items["item_idx"].to_pylist(), items["title"].to_pylist()))
    rows, no_profile = [], 0
    for user, item in zip(u.tolist(), i.tolist()):
        profile = user_profiles.get(user)
        if profile is None:
            no_profile += 1  # the user's profile failed or is missing: no prompt without one
            continue
        for k in range(cfg.negatives.per_pair):
            system, text = template.render(user_profile=profile, title=titles.get(item),
                                           item_profile=item_profiles.get(item))
            rows.append({"id": f"pair:{user}:{item}:{k}", "user_idx": user, "item_idx": item, "k": k,
                         "kind": "hard_negative", "system": system, "user": text})
    return pa.Table.from_pylist(rows), {"pairs": int(len(u)), "pairs_without_user_profile": no_profile}


def run(ctx: Context) -> dict:
    cfg, art = ctx.cfg, ctx.art
    prep = art.need(A.PREPARED, "prepared data")
    items_m = art.need(A.ITEM_PROFILES, "item profiles")
    users_m = art.need(A.USER_PROFILES, "user profiles")
    data = art.prepared()
    template = prompts.load("hard_negative", prompts.domain_for(cfg.llm.domain, cfg.data.format),
                            cfg.llm.prompts_dir)
    table, extra = pair_prompts(cfg, data["train"], data["items"], art.user_profiles(), art.item_profiles(),
                                template)
    inputs = {"prepared": prep["fingerprint"], "item_profiles": items_m["fingerprint"],
              "user_profiles": users_m["fingerprint"]}
    part = {"negatives": cfg.negatives.model_dump(mode="json", include={"per_pair", "pairs_per_user"}),
            "seed": cfg.draw_seed}
    return generation_stage(ctx, A.NEGATIVES, table, template, ("user_idx", "item_idx", "k"), extra, inputs, part)
