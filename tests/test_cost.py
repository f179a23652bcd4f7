"""The cost model (benchmarks/cost.py): counts follow the dataset sizes and the knobs, unmeasured rates say so."""

from benchmarks import cost


def test_calls_and_pairs_follow_the_sizes_and_the_knob():
    rows = {r[0]: r for r in cost.stage_rows(1000, 500, 10_000, pairs_per_user=2)}
    assert rows["user profiles (LLM)"][1] == "1,000" and rows["item profiles (LLM)"][1] == "500"
    assert rows["method-1 negatives (LLM)"][1] == "2,000"  # pairs_per_user scales the calls
    rungs = cost.rung_rows(10_000)
    assert all(r[1] == "8,000" for r in rungs)  # 0.8 x interactions
    # the encoder rung's fp32 fine-tuning at its measured stage rate (8,000 pairs / 2.45 pairs/s = 0.9 h)
    assert rungs[0][2] == f"{8000 / cost.ENCODER_FT_FP32 / 3600:,.1f} h" == "0.9 h"
    assert cost._h(None) == "n/m"  # an unmeasured rate is said, not guessed


def test_markdown_covers_the_four_published_datasets():
    md = cost.markdown()
    for name, (u, i, n) in cost.DATASETS.items():
        assert f"## {name}: {u:,} users, {i:,} items, {n:,} interactions" in md
