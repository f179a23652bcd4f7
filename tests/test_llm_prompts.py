import numpy as np
import pyarrow as pa
import pytest

from hnl_ray.config import load_config
from hnl_ray.llm import prompts
from hnl_ray.stages.negatives import sample_pairs
from hnl_ray.stages.profiles import item_prompts, user_prompts


@pytest.mark.parametrize("domain", ["products", "businesses", "movies"])
@pytest.mark.parametrize("kind", prompts.KINDS)
def test_every_template_renders(domain, kind):
    t = prompts.load(kind, domain)
    system, user = t.render(title="T", categories=["a", "b"], brand="B", city="C", description="D", reviews=["r"],
                            history=[{"title": "x", "profile": "p", "review": "r"}], user_profile="U",
                            item_profile="I")
    assert system and user and "JSON" in system


def test_domain_by_format_and_override(tmp_path):
    assert prompts.domain_for("auto", "yelp") == "businesses"
    assert prompts.domain_for("auto", "movielens") == "movies"
    assert prompts.domain_for("auto", "amazon") == "products"
    (tmp_path / "products").mkdir()
    (tmp_path / "products" / "item_profile.txt").write_text("[system]\nmine\n[user]\n{{ title }}")
    t = prompts.load("item_profile", "products", str(tmp_path))
    assert t.render(title="x") == ("mine", "x")
    assert prompts.load("user_profile", "products", str(tmp_path)).path.endswith("products/user_profile.txt")
    (tmp_path / "products" / "hard_negative.txt").write_text("no sections")
    with pytest.raises(ValueError, match=r"needs a \[system\] and a \[user\] section"):
        prompts.load("hard_negative", "products", str(tmp_path))


def _tables():
    items = pa.table({"item_idx": [0, 1, 2], "item_id": ["a", "b", "c"], "title": ["Dino Puzzle", None, "Robot"],
                      "description": ["A puzzle", None, None], "categories": [["Toys"], None, None],
                      "brand": ["B", None, None], "city": [None, None, None], "extra": [None, None, None]})
    train = pa.table({"user_idx": [0, 0, 0, 1], "item_idx": [0, 2, 1, 0], "rating": [5.0] * 4,
                      "timestamp": [3, 2, 1, 5], "review": ["loves dinos", None, "meh", "great"]})
    users = pa.table({"user_idx": [0, 1, 2], "user_id": ["u0", "u1", "u2"], "extra": [None] * 3})
    return items, train, users


def test_item_without_text_is_prompted_and_flagged():
    items, train, _ = _tables()
    cfg = load_config()
    table, counts = item_prompts(cfg, items, train, prompts.load("item_profile", "products"))
    rows = {r["item_idx"]: r for r in table.to_pylist()}
    assert counts["items_without_text"] == 1 and rows[1]["no_text"] and "(no title given)" in rows[1]["user"]
    assert "loves dinos" in rows[0]["user"] and "great" in rows[0]["user"]  # training reviews, most recent first
    assert rows[0]["id"] == "item:0"


def test_user_prompts_use_training_history_most_recent_first_within_budget():
    items, train, users = _tables()
    cfg = load_config(sets=["profiles.user_token_budget=64"])
    t = prompts.load("user_profile", "products")
    table, counts = user_prompts(cfg, users, train, items, {0: "dino fans"}, t, lambda xs: [40] * len(xs))
    rows = {r["user_idx"]: r for r in table.to_pylist()}
    assert counts["users_without_training_interactions"] == 1 and 2 not in rows  # user 2 has no training rows
    assert rows[0]["history_len"] == 1 and counts["users_history_cut_to_budget"] == 1
    assert rows[0]["user"].startswith("PURCHASES") and "Dino Puzzle: dino fans" in rows[0]["user"]
    table, _ = user_prompts(load_config(), users, train, items, {}, t, lambda xs: [1] * len(xs))
    u0 = table.to_pylist()[0]["user"]
    assert u0.index("Dino Puzzle") < u0.index("Robot")  # timestamps 3, 2, 1: most recent first


def test_sample_pairs_caps_per_user_and_is_seeded():
    u = np.repeat(np.arange(5), 7)
    i = np.arange(35)
    a = sample_pairs(u, i, 2, seed=1)
    b = sample_pairs(u, i, 2, seed=1)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    assert np.bincount(a[0]).tolist() == [2] * 5
    assert len(sample_pairs(u, i, None, 1)[0]) == 35


@pytest.mark.parametrize("body", ["{{ ''.__class__.__mro__ }}", "{{ title['__class__'] }}",
                                  "{{ cycler.__init__.__globals__ }}", "{% set _x = 1 %}{{ _x }}"])
def test_template_touching_internals_is_refused(tmp_path, body):
    (tmp_path / "item_profile.txt").write_text(f"[system]\ns\n[user]\n{body}")
    with pytest.raises(prompts.PromptTemplateError, match="may not use names starting with '_'"):
        prompts.load("item_profile", "products", str(tmp_path))


def test_template_sandbox_blocks_internals_reached_at_render_time(tmp_path):
    # No private name in the template's syntax, yet str.format reaches one: the sandbox refuses it.
    (tmp_path / "item_profile.txt").write_text("[system]\ns\n[user]\n{{ '{0.__class__}'.format(title) }}")
    t = prompts.load("item_profile", "products", str(tmp_path))
    with pytest.raises(prompts.PromptTemplateError, match="refused by the template sandbox"):
        t.render(title="x")


def test_template_includes_stay_in_their_folder(tmp_path):
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    d = tmp_path / "prompts"
    d.mkdir()
    (d / "part.txt").write_text("inside {{ title }}")
    (d / "item_profile.txt").write_text("[system]\ns\n[user]\n{% include 'part.txt' %}")
    assert prompts.load("item_profile", "products", str(d)).render(title="x")[1] == "inside x"
    (d / "user_profile.txt").write_text("[system]\ns\n[user]\n{% include '../secret.txt' %}")
    with pytest.raises(prompts.PromptTemplateError, match="not found"):
        prompts.load("user_profile", "products", str(d)).render()
    (d / "link.txt").symlink_to(tmp_path / "secret.txt")
    (d / "hard_negative.txt").write_text("[system]\ns\n[user]\n{% include 'link.txt' %}")
    with pytest.raises(prompts.PromptTemplateError, match="leads outside"):
        prompts.load("hard_negative", "products", str(d)).render()
