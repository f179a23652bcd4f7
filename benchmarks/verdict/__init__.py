"""The verdict protocol (issue 14): one benchmark table per config in configs/bench/, every sampler tuned alike on
validation through `hnl-ray tune`, >= 5 seeds, paired per-user bootstrap intervals against the best tuned classic
sampler, item-popularity and user-activity groups, and the false-hard-negative diagnostic.

    python -m benchmarks.verdict --config configs/bench/amazon-scientific.yaml   # a whole table, resumable
    python -m benchmarks.verdict --smoke                                          # tiny synthetic, ~1-2 min
"""
