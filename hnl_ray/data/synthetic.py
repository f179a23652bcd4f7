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

The generator is deterministic given its seed and fully vectorised.
"""

from __future__ import annotations

import datetime as dt

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


def generate(src: SyntheticSource, seed: int) -> SourceData:
    rng = np.random.default_rng(src.seed if src.seed is not None else seed)
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

    theme_score = np.where(theme[None, :] == fav[:, None], 2.0,
                           np.where(theme[None, :] == second[:, None], 0.8, -1.2))
    age_gap = np.abs(age[None, :] - uage[:, None])
    affinity = (np.log(cat_pref[:, cat] + 1e-3) * 0.9 + theme_score - 1.3 * age_gap
                + brand_pref[:, brand] * 0.5)
    logits = affinity / src.taste_temperature + np.log(pop)[None, :]

    counts = np.maximum(src.min_interactions,
                        rng.lognormal(np.log(src.mean_interactions) - 0.18, 0.6, n_users).astype(int))
    counts = np.minimum(counts, n_items // 2)
    noise_n = rng.binomial(counts, src.noise)
    taste_n = counts - noise_n
    # Gumbel top-k draws without replacement, all users at once: taste-driven, then popularity-only noise.
    order = np.argsort(-(logits + rng.gumbel(size=logits.shape)), axis=1)
    pop_order = np.argsort(-(np.log(pop)[None, :] + rng.gumbel(size=logits.shape)), axis=1)
    rank = np.arange(n_items)[None, :]
    chosen = np.zeros((n_users, n_items), dtype=bool)
    np.put_along_axis(chosen, order, rank < taste_n[:, None], axis=1)
    is_noise = np.zeros_like(chosen)
    # noise picks: the first popularity-ordered items not already chosen
    free = ~np.take_along_axis(chosen, pop_order, axis=1)
    pick = free & (np.cumsum(free, axis=1) <= noise_n[:, None])
    np.put_along_axis(is_noise, pop_order, pick, axis=1)
    chosen |= is_noise
    u_idx, i_idx = np.nonzero(chosen)
    noisy = is_noise[u_idx, i_idx]

    # ---- ratings from affinity; reviews from the same facts
    a = affinity[u_idx, i_idx]
    z = (a - a.mean()) / (a.std() + 1e-9)
    rating = np.clip(np.round(3.9 + 0.9 * z + rng.normal(0, 0.5, len(a)) - 1.4 * noisy), 1, 5).astype(np.float32)
    start = dt.datetime(2016, 1, 1, tzinfo=dt.timezone.utc).timestamp()
    span = 2 * 365 * 86400
    ustart = rng.uniform(0, 0.6, n_users) * span
    ts = (start + ustart[u_idx] + rng.uniform(0, 0.4, len(u_idx)) * span).astype(np.int64)

    reviews = _reviews(rng, u_idx, i_idx, rating, fav, second, uage, age, theme) if src.keep_reviews else None
    if reviews is not None and src.max_review_chars:
        reviews = [r[: src.max_review_chars] for r in reviews]
    uid = np.array([f"U{u:05d}" for u in range(n_users)], dtype=object)
    iid = np.array([f"I{i:05d}" for i in range(n_items)], dtype=object)
    n = len(u_idx)
    inter = pa.table({
        "user_id": pa.array(uid[u_idx], pa.string()), "item_id": pa.array(iid[i_idx], pa.string()),
        "rating": pa.array(rating), "timestamp": pa.array(ts),
        "review": pa.array(reviews, pa.string()) if reviews is not None else pa.nulls(n, pa.string()),
        "split": pa.nulls(n, pa.string()),
    }, schema=INTERACTIONS)
    items = _items(iid, cat, theme, age, brand, tier, variant, twin_of)
    users = pa.table({"user_id": pa.array(uid, pa.string()), "extra": pa.nulls(n_users, pa.string())},
                     schema=USERS)
    return SourceData(interactions=inter, items=items, users=users, files=[],
                      counts={"synthetic_lookalike_twins": int(n_twins), "synthetic_noise_interactions":
                              int(noisy.sum())})


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


def _reviews(rng, u_idx, i_idx, rating, fav, second, uage, age, theme) -> list[str]:
    """Reviews state what mattered: a liked theme, a theme mismatch, or an age mismatch."""
    out = []
    g = rng.integers(0, 1000, len(u_idx))
    for k in range(len(u_idx)):
        u, i = u_idx[k], i_idx[k]
        slots = {"who": AGES[uage[u]][1], "theme": THEMES[theme[i]][0], "fav": THEMES[fav[u]][0],
                 "age_word": "simple" if age[i] < uage[u] else "advanced"}
        if rating[k] >= 4:
            pool = _GOOD
        elif theme[i] not in (fav[u], second[u]):
            pool = _BAD_THEME
        elif age[i] != uage[u]:
            pool = _BAD_AGE
        else:
            pool = _MEH
        out.append(pool[g[k] % len(pool)].format(**slots))
    return out
