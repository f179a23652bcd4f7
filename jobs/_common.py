"""Argument handling shared by the job scripts (`ray job submit ... -- python jobs/<stage>.py --config X`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the working dir's package

from hnl_ray.config import Config, load_config  # noqa: E402


def parse(description: str, extra=None) -> tuple[argparse.Namespace, Config]:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--config", "-c", help="YAML config file")
    ap.add_argument("--set", "-s", action="append", default=[], dest="sets", help="dotted.key=value override")
    ap.add_argument("--run-dir", help="run directory (local path or s3:// / gs:// URI)")
    ap.add_argument("--force", action="store_true", help="redo even when up to date")
    if extra:
        extra(ap)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args, load_config(args.config, args.sets, args.run_dir)
