"""The embedded demo dataset: a synthetic, text-attributed toy shop with structure worth learning.

What it plants, and why:

* **Facets.** Every item has a category (puzzle, building set, ...), a theme (dinosaurs, space, ...), an age band,
  a brand and a price tier; its title, description and categories are written from them. Text therefore carries
  the same information a collaborative model has to discover from behaviour.
* **Tastes.** Every user (a parent buying for one child) prefers a few categories (a sparse Dirichlet draw), has a
  favourite theme and a runner-up, one age band (neighbouring bands are tolerated) and a mild brand leaning.
  Interactions are drawn with probability proportional to `popularity^1 * exp(affinity / temperature)`, so
  collaborative filtering can recover tastes from co-occurrence.
* **Popularity skew.** Item popularity follows a Zipf law (exponent `popularity_skew`) in random order, so a
  popularity baseline is reasonable but beatable, and negative sampling has a head and a tail.
* **Look-alikes.** A share of items (`lookalike_share`) are twins of another item: same category, brand, age band
  and price, nearly the same title, but a *different theme* - the facet users care about most. A twin is the
  textbook hard negative: close in text and in co-purchase neighbourhood, wrong for the user. This is what
  semantic (LLM) negatives are meant to find and uniform sampling rarely draws.
* **Noise.** A share of interactions (`noise`) ignore taste and follow popularity only; they get lower ratings,
  and their reviews say what did not fit, so rating filters and review-based profiles both have signal.
* **Text.** Reviews mention the child's age and the theme they love (or the mismatch), as real reviews do.
  Timestamps fall between 2016-01-01 and 2018-01-01, ratings are 1-5.

The generator is deterministic given its seed. It works on blocks of users and on facet groups of items (every
item of a category x theme x age band x brand group has the same affinity for a user), so its memory grows with
the interactions it writes, never with users x items: 400k users x 100k items (~10M interactions) fits in a few GB.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..config.data import SyntheticSource
from .schema import INTERACTIONS, ITEMS, USERS, SourceData

CATEGORIES = [
    ("Puzzles", "jigsaw puzzle", ["pieces fit snugly", "a poster of the finished picture is included"]),
    ("Building Sets", "building set", ["bricks click together firmly", "step-by-step instructions"]),
    ("Plush Toys", "plush toy", ["soft and machine washable", "stitched eyes safe for small hands"]),
    ("Action Figures", "action figure", ["poseable joints", "comes with accessories"]),
    ("Board Games", "board game", ["for 2 to 4 players", "rounds last about 20 minutes"]),
    ("Remote Control Vehicles", "remote control vehicle", ["rechargeable battery", "runs on carpet and tile"]),
    ("Science Kits", "science kit", ["ten guided experiments", "a booklet explains the science"]),
    ("Arts & Crafts", "craft kit", ["washable paints", "everything needed for three projects"]),
    ("Outdoor Play", "outdoor game", ["weather-resistant parts", "sets up in the yard in minutes"]),
    ("Dolls & Playsets", "playset", ["several rooms to arrange", "two figures included"]),
]
THEMES = [
    ("dinosaurs", "Dino", "a T-rex, a triceratops and a volcano"),
    ("outer space", "Galaxy", "rockets, planets and an astronaut crew"),
    ("ocean life", "Ocean", "sharks, dolphins and a coral reef"),
    ("farm animals", "Farmyard", "a barn, cows, pigs and a tractor"),
    ("fairy tales", "Enchanted", "a castle, a dragon and a royal family"),
    ("robots", "Robo", "gears, circuits and friendly robots"),
    ("racing cars", "Turbo", "race cars, a pit stop and a checkered flag"),
    ("jungle safari", "Safari", "lions, elephants and a jeep"),
]
AGES = [("toddlers (1-3 years)", "toddler", "big, chunky parts"),
        ("preschoolers (3-5 years)", "preschooler", "simple rules and bright colours"),
        ("kids (6-9 years)", "kid", "a real challenge"),
        ("tweens (10+ years)", "tween", "fine detail and advanced play")]
BRANDS = ["Brickly", "Zoomio", "Tiny Tusk", "Moonbeam", "Kindle Kids", "Playforge", "Oakridge", "Sunny Days",
          "Wondery", "Pebble & Co", "Starlark", "Hopscotch"]
TIERS = [("budget", "an affordable pick"), ("standard", "good value"), ("premium", "premium materials")]
VARIANTS = ["Adventure", "Discovery", "Explorer", "Deluxe", "Classic", "Junior", "Quest", "Party"]


@dataclass
class Latent:
    """The generator's hidden facts: each item's facets and twin, each user's tastes (benchmarks use them as an
    oracle, e.g. benchmarks/positive_control.py). Index = the number in the id (item I00042 is row 42)."""

    cat: np.ndarray
    theme: np.ndarray
    age: np.ndarray
    brand: np.ndarray
    tier: np.ndarray
    variant: np.ndarray
    twin_of: np.ndarray  # the original an item is a twin of, -1 for base items
    pop: np.ndarray
    cat_pref: np.ndarray
    fav: np.ndarray  # favourite theme
    second: np.ndarray  # runner-up theme
    uage: np.ndarray
    brand_pref: np.ndarray


def _draw_latent(rng: np.random.Generator, src: SyntheticSource) -> Latent:
    n_users, n_items = src.n_users, src.n_items
    n_cat, n_theme, n_age, n_brand = len(CATEGORIES), len(THEMES), len(AGES), len(BRANDS)

    # ---- items: base items, then look-alike twins that change only the theme
    n_twins = int(round(n_items * src.lookalike_share / 2))
    n_base = n_items - n_twins
    cat = rng.integers(0, n_cat, n_items)
    theme = rng.integers(0, n_theme, n_items)
    age = rng.integers(0, n_age, n_items)
    brand = rng.integers(0, n_brand, n_items)
    tier = rng.integers(0, len(TIERS), n_items)
    variant = rng.integers(0, len(VARIANTS), n_items)
    twin_of = np.full(n_items, -1)
    originals = rng.choice(n_base, size=n_twins, replace=False)
    twins = np.arange(n_base, n_items)
    twin_of[twins] = originals
    for field in (cat, age, brand, tier, variant):
        field[twins] = field[originals]
    theme[twins] = (theme[originals] + rng.integers(1, n_theme, n_twins)) % n_theme  # a different theme
    pop = (1.0 + rng.permutation(n_items)) ** (-src.popularity_skew)

    # ---- users: sparse category tastes, a favourite and runner-up theme, an age band, a brand leaning
    cat_pref = rng.dirichlet(np.full(n_cat, 0.35), n_users)
    fav = rng.integers(0, n_theme, n_users)
    second = (fav + rng.integers(1, n_theme, n_users)) % n_theme
    uage = rng.integers(0, n_age, n_users)
    brand_pref = rng.normal(0, 0.4, (n_users, n_brand))
    return Latent(cat, theme, age, brand, tier, variant, twin_of, pop, cat_pref, fav, second, uage, brand_pref)


def latent(src: SyntheticSource, seed: int) -> Latent:
    """The hidden facts `generate(src, seed)` drew its data from (the same random stream)."""
    return _draw_latent(np.random.default_rng(src.seed if src.seed is not None else seed), src)


def generate(src: SyntheticSource, seed: int) -> SourceData:
    rng = np.random.default_rng(src.seed if src.seed is not None else seed)
    n_users, n_items = src.n_users, src.n_items
    lat = _draw_latent(rng, src)
    cat, theme, age, brand, tier, variant, twin_of, pop = (lat.cat, lat.theme, lat.age, lat.brand, lat.tier,
                                                           lat.variant, lat.twin_of, lat.pop)
    cat_pref, fav, second, uage, brand_pref = lat.cat_pref, lat.fav, lat.second, lat.uage, lat.brand_pref
    n_twins = int((twin_of >= 0).sum())
    groups = _FacetGroups(cat, theme, age, brand, pop)

    counts = np.maximum(src.min_interactions,
                        rng.lognormal(np.log(src.mean_interactions) - 0.18, 0.6, n_users).astype(int))
    counts = np.minimum(counts, n_items // 2)
    noise_n = rng.binomial(counts, src.noise)
    taste_n = counts - noise_n

    # Users in blocks: memory grows with block x facet groups, never with users x items.
    pop_cum = np.cumsum(pop)
    parts = []
    for lo in range(0, n_users, _USER_BLOCK):
        u = np.arange(lo, min(lo + _USER_BLOCK, n_users))
        aff_g = _group_affinity(cat_pref[u], fav[u], second[u], uage[u], brand_pref[u])  # (block, groups)
        logw = aff_g / src.taste_temperature + groups.log_mass[None, :]
        draw = groups.sampler(logw)
        taste = _draw_distinct(rng, lambda rows: draw(rng, rows), taste_n[u], n_items,
                               exclude=None, logits=lambda rows: groups.item_logits(logw[rows]))
        # noise: popularity only, among the items the user did not already pick
        noise = _draw_distinct(rng, lambda rows: np.searchsorted(
            pop_cum, rng.uniform(0, pop_cum[-1], len(rows)), side="right").clip(0, n_items - 1),
            noise_n[u], n_items, exclude=taste,
            logits=lambda rows: np.repeat(groups.log_pop[None, :], len(rows), axis=0))
        for picked, noisy in ((taste, False), (noise, True)):
            rows, items = picked
            parts.append((u[rows], items, aff_g[rows, groups.of_item[items]], np.full(len(rows), noisy)))
    u_idx, i_idx, a, noisy = (np.concatenate([p[k] for p in parts]) for k in range(4))
    order = np.lexsort((i_idx, u_idx))  # by user, then item
    u_idx, i_idx, a, noisy = u_idx[order], i_idx[order], a[order], noisy[order]

    # ---- ratings from affinity; reviews from the same facts
    z = (a - a.mean()) / (a.std() + 1e-9)
    rating = np.clip(np.round(3.9 + 0.9 * z + rng.normal(0, 0.5, len(a)) - 1.4 * noisy), 1, 5).astype(np.float32)
    start = dt.datetime(2016, 1, 1, tzinfo=dt.timezone.utc).timestamp()
    span = 2 * 365 * 86400
    ustart = rng.uniform(0, 0.6, n_users) * span
    ts = (start + ustart[u_idx] + rng.uniform(0, 0.4, len(u_idx)) * span).astype(np.int64)

    n = len(u_idx)
    reviews = (_reviews(rng, u_idx, i_idx, rating, fav, second, uage, age, theme, src.max_review_chars)
               if src.keep_reviews else pa.nulls(n, pa.string()))
    uid = pa.array([f"U{u:05d}" for u in range(n_users)], pa.string())
    iid = pa.array([f"I{i:05d}" for i in range(n_items)], pa.string())
    inter = pa.table({
        "user_id": uid.take(pa.array(u_idx)), "item_id": iid.take(pa.array(i_idx)),
        "rating": pa.array(rating), "timestamp": pa.array(ts), "review": reviews,
        "split": pa.nulls(n, pa.string()),
    }, schema=INTERACTIONS)
    items = _items(iid.to_pylist(), cat, theme, age, brand, tier, variant, twin_of)
    users = pa.table({"user_id": uid, "extra": pa.nulls(n_users, pa.string())}, schema=USERS)
    return SourceData(interactions=inter, items=items, users=users, files=[],
                      counts={"synthetic_lookalike_twins": int(n_twins), "synthetic_noise_interactions":
                              int(noisy.sum())})


_USER_BLOCK = 1024


class _FacetGroups:
    """Items grouped by (category, theme, age band, brand): a user's affinity is the same for every item of a
    group, so a taste-driven draw picks a group (weight: affinity x the group's popularity mass), then an item of
    it in proportion to popularity. That is exactly a draw proportional to popularity x exp(affinity / T)."""

    def __init__(self, cat, theme, age, brand, pop):
        self.of_item = ((cat * len(THEMES) + theme) * len(AGES) + age) * len(BRANDS) + brand
        n_groups = len(CATEGORIES) * len(THEMES) * len(AGES) * len(BRANDS)
        self.sorted_items = np.argsort(self.of_item, kind="stable")
        self.cum = np.cumsum(pop[self.sorted_items])
        sizes = np.bincount(self.of_item, minlength=n_groups)
        self.end = np.cumsum(sizes)
        self.start = self.end - sizes
        self.mass = np.bincount(self.of_item, weights=pop, minlength=n_groups)
        with np.errstate(divide="ignore"):
            self.log_mass = np.log(self.mass)  # -inf for empty groups: never drawn
        self.log_pop = np.log(pop)

    def sampler(self, logw):
        """A function (rng, rows) -> one item draw (with replacement) for each entry of `rows`, a row of `logw`
        (log group weights per user); the rows' cumulative weights are computed once."""
        n_groups = logw.shape[1]
        w = np.exp(logw - logw.max(axis=1, keepdims=True))
        cum = np.cumsum(w, axis=1)
        cum /= cum[:, -1:]
        flat = (cum + np.arange(len(logw))[:, None]).ravel()

        def draw(rng, rows):
            g = np.searchsorted(flat, rng.random(len(rows)) + rows, side="right")
            g = (g - rows * n_groups).clip(0, n_groups - 1)
            before = np.where(self.start[g] > 0, self.cum[self.start[g] - 1], 0.0)
            pos = np.searchsorted(self.cum, before + rng.random(len(rows)) * self.mass[g], side="right")
            return self.sorted_items[pos.clip(self.start[g], self.end[g] - 1)]

        return draw

    def item_logits(self, logw):
        """Per-item log weights (rows x items), for the rare exact completion in `_draw_distinct`."""
        return logw[:, self.of_item] - self.log_mass[self.of_item] + self.log_pop[None, :]


def _group_affinity(cat_pref, fav, second, uage, brand_pref) -> np.ndarray:
    """Affinity of each user (row) to each facet group, in `_FacetGroups` order."""
    n_theme = len(THEMES)
    t = np.arange(n_theme)[None, :]
    theme_score = np.where(t == fav[:, None], 2.0, np.where(t == second[:, None], 0.8, -1.2))
    age_gap = np.abs(np.arange(len(AGES))[None, :] - uage[:, None])
    aff = (np.log(cat_pref + 1e-3)[:, :, None, None, None] * 0.9 + theme_score[:, None, :, None, None]
           - 1.3 * age_gap[:, None, None, :, None] + brand_pref[:, None, None, None, :] * 0.5)
    return aff.reshape(len(fav), -1)


def _draw_distinct(rng, draw, need, n_items, exclude, logits):
    """For each row r, `need[r]` distinct items, drawn without replacement in proportion to the row's weights
    (a Plackett-Luce draw, as a Gumbel top-k over all items would give) and skipping `exclude`'s (rows, items).

    Repeated draws with replacement keeping first occurrences are exactly such a draw; `draw(rows)` gives one
    draw for each entry of `rows`. A row whose weight sits on few items is completed by an exact Gumbel top-k over
    the items it has not drawn yet (`logits(rows)`), which is exact given the items drawn so far."""
    blocked = None
    if exclude is not None and len(exclude[0]):
        blocked = np.unique(exclude[0].astype(np.int64) * n_items + exclude[1])
    rows = np.flatnonzero(need > 0)
    m = 2 * need[rows] + 8
    seq_rows = seq_items = np.empty(0, dtype=np.int64)
    drawn = np.zeros(len(need), dtype=np.int64)
    out = []
    while len(rows):
        new_rows = np.repeat(rows, m)
        drawn[rows] += m
        seq_rows = np.concatenate([seq_rows, new_rows])
        seq_items = np.concatenate([seq_items, draw(new_rows)])
        order = np.argsort(seq_rows, kind="stable")  # by row, each row's draws in the order drawn
        seq_rows, seq_items = seq_rows[order], seq_items[order]
        f_rows, f_items = _first_distinct(seq_rows, seq_items, n_items, blocked)
        enough = np.ones(len(need), dtype=bool)
        enough[rows] = np.bincount(f_rows, minlength=len(need))[rows] >= need[rows]
        done = enough[f_rows]
        keep = done & (_rank_in_row(f_rows) < need[f_rows])
        out.append((f_rows[keep], f_items[keep]))
        rows = np.flatnonzero(~enough)
        if len(rows) and drawn[rows].max() > 4 * max(n_items, 64):
            # weights concentrated on a few items: complete those rows exactly
            partial = (f_rows[~done], f_items[~done])
            out.append(partial)
            out.extend(_gumbel_complete(rng, logits, rows, need, partial, blocked, n_items))
            break
        m = drawn[rows]  # double each short row's draws
        short = ~enough[seq_rows]
        seq_rows, seq_items = seq_rows[short], seq_items[short]
    if not out:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate([r for r, _ in out]), np.concatenate([i for _, i in out])


def _first_distinct(seq_rows, seq_items, n_items, blocked):
    """(row, item) of each row's distinct, unblocked draws, in the order they were first drawn."""
    key = seq_rows * n_items + seq_items
    pos = np.arange(key.size)
    if blocked is not None:
        ok = ~np.isin(key, blocked)
        key, pos = key[ok], pos[ok]
    _, first = np.unique(key, return_index=True)
    first = np.sort(pos[first])
    return seq_rows[first], seq_items[first]


def _rank_in_row(row_of: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal values of a grouped array."""
    idx = np.arange(len(row_of))
    starts = np.r_[0, np.flatnonzero(np.diff(row_of)) + 1] if len(row_of) else np.empty(0, int)
    return idx - np.repeat(starts, np.diff(np.r_[starts, len(row_of)]))


def _gumbel_complete(rng, logits, rest, need, partial, blocked, n_items):
    """Yields (rows, items) completing each row of `rest` to `need` items by a Gumbel top-k over the items it has
    neither drawn (`partial`) nor been blocked from, 64 rows at a time."""
    for lo in range(0, len(rest), 64):
        chunk = rest[lo:lo + 64]
        lg = logits(chunk) + rng.gumbel(size=(len(chunk), n_items))
        taken = np.isin(partial[0], chunk)
        lg[np.searchsorted(chunk, partial[0][taken]), partial[1][taken]] = -np.inf
        if blocked is not None:
            b = blocked[np.isin(blocked // n_items, chunk)]
            lg[np.searchsorted(chunk, b // n_items), b % n_items] = -np.inf
        have = np.bincount(np.searchsorted(chunk, partial[0][taken]), minlength=len(chunk))
        order = np.argsort(-lg, axis=1)
        for k, r in enumerate(chunk):
            extra = order[k, : need[r] - have[k]]
            yield np.full(len(extra), r), extra


def _items(iid, cat, theme, age, brand, tier, variant, twin_of) -> pa.Table:
    titles, descs, cats, brands, extras = [], [], [], [], []
    for i in range(len(iid)):
        c_name, c_noun, c_feats = CATEGORIES[cat[i]]
        t_name, t_adj, t_detail = THEMES[theme[i]]
        a_name, _, a_feat = AGES[age[i]]
        tier_name, tier_text = TIERS[tier[i]]
        titles.append(f"{BRANDS[brand[i]]} {t_adj} {VARIANTS[variant[i]]} {c_noun.title()}")
        article = "An" if t_name[0] in "aeiou" else "A"
        descs.append(f"{article} {t_name} {c_noun} for {a_name} with {t_detail}. Details: {c_feats[0]}, "
                     f"{c_feats[1]}; {a_feat}. {tier_text.capitalize()}.")
        cats.append(["Toys & Games", c_name, t_name.title()])
        brands.append(BRANDS[brand[i]])
        extras.append(f'{{"price_tier": "{tier_name}", "age_band": "{a_name}"}}')
    return pa.table({"item_id": pa.array(iid, pa.string()), "title": titles, "description": descs,
                     "categories": pa.array(cats, pa.list_(pa.string())), "brand": brands,
                     "city": pa.nulls(len(iid), pa.string()), "extra": extras}, schema=ITEMS)


_GOOD = ["Great quality and my {who} loves {theme}, so this was a hit.",
         "My {who} is obsessed with {theme}; we play with this every day.",
         "Perfect for a {who} who loves {theme}. Sturdy and fun.",
         "Bought as a gift for a {who}; anything with {theme} wins."]
_BAD_THEME = ["My {who} only cares about {fav}; this {theme} one sat in the box.",
              "Well made, but my {who} wanted {fav}, not {theme}."]
_BAD_AGE = ["Nice {theme} design, but far too {age_word} for my {who}.",
            "My {who} loves {theme}, but this is meant for another age: too {age_word}."]
_MEH = ["It is fine. My {who} played with it a few times.", "Okay for the price; nothing special."]


def _reviews(rng, u_idx, i_idx, rating, fav, second, uage, age, theme, max_chars: int) -> pa.Array:
    """Reviews state what mattered: a liked theme, a theme mismatch, or an age mismatch. Only a few thousand
    distinct texts exist (template x child's age x theme x favourite x age word): each is written once and taken
    per interaction."""
    pools = [_GOOD, _BAD_THEME, _BAD_AGE, _MEH]
    g = rng.integers(0, 1000, len(u_idx))
    th, fv, ua = theme[i_idx], fav[u_idx], uage[u_idx]
    pool = np.where(rating >= 4, 0, np.where((th != fv) & (th != second[u_idx]), 1,
                                             np.where(age[i_idx] != ua, 2, 3)))
    sizes = np.array([len(p) for p in pools])
    template = np.r_[0, np.cumsum(sizes)[:-1]][pool] + g % sizes[pool]
    older = (age[i_idx] < ua).astype(np.int64)
    code = (((template * len(AGES) + ua) * len(THEMES) + th) * len(THEMES) + fv) * 2 + older
    uniq, inverse = np.unique(code, return_inverse=True)
    flat = [t for p in pools for t in p]
    texts = []
    for c in uniq.tolist():
        c, old = divmod(c, 2)
        c, f = divmod(c, len(THEMES))
        c, t = divmod(c, len(THEMES))
        tpl, who = divmod(c, len(AGES))
        text = flat[tpl].format(who=AGES[who][1], theme=THEMES[t][0], fav=THEMES[f][0],
                                age_word="simple" if old else "advanced")
        texts.append(text[:max_chars] if max_chars else text)
    return pa.array(texts, pa.string()).take(pa.array(inverse.ravel()))
