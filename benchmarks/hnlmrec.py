"""#5's HNLMRec table is superseded by the verdict protocol (issue 14): every sampler tuned alike on validation,
5 seeds, paired bootstrap intervals, groups and the false-hard-negative diagnostic, from a config:

    python -m benchmarks.verdict --config configs/bench/amazon-scientific.yaml

The settings this module used to hold as lists of --set strings are now YAML: the LLM stages in
configs/bench/pipeline/<dataset>.yaml, the shared CF settings in configs/bench/<dataset>.yaml. The figures of the
earlier table, with the settings they ran with, stay in benchmarks/results/hnlmrec-amazon-scientific.json (made by
this module at commit c84ec5b). `python -m benchmarks.hnlmrec [--dataset D]` runs the verdict table of D.
"""

from __future__ import annotations

import argparse
import sys

from .verdict.__main__ import ROOT
from .verdict.__main__ import main as verdict


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="amazon-scientific", choices=["amazon-scientific", "amazon-toys-p5"])
    args = ap.parse_args()
    return verdict(["--config", str(ROOT / "configs" / "bench" / f"{args.dataset}.yaml")])


if __name__ == "__main__":
    sys.exit(main())
