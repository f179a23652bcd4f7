"""Learning-curve plot of one CF run (loss and the validation metric per epoch)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def learning_curve(log: list[dict], metric: str, best_epoch: int | None, title: str) -> bytes:
    fig, ax1 = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    ep = [r["epoch"] for r in log]
    ax1.plot(ep, [r["loss"] for r in log], color="tab:gray", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss", color="tab:gray")
    ax2 = ax1.twinx()
    ev = [(r["epoch"], r["valid"][metric]) for r in log if r.get("valid")]
    if ev:
        ax2.plot([e for e, _ in ev], [v for _, v in ev], color="tab:blue", marker=".", label=f"valid {metric}")
        ax2.set_ylabel(f"valid {metric}", color="tab:blue")
    if best_epoch is not None:
        ax2.axvline(best_epoch, color="tab:green", linestyle="--", linewidth=1, label=f"chosen epoch {best_epoch}")
    ax1.set_title(title, fontsize=10)
    fig.legend(loc="upper right", fontsize=8, bbox_to_anchor=(0.88, 0.88))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
