"""Known noise, silenced where it starts, so that a run's log shows what the run did.

Each filter names what it hides and why it is safe. Called by the CLI at start and by the stages' Ray workers
(`quiet_worker`), since warnings and logs raised in a worker process are forwarded to the driver's output.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# (message prefix, category): library warnings about the libraries' own internals, not about our calls.
LIBRARY_WARNINGS = [
    # peft asks a transformers model for `is_gradient_checkpointing`, renamed in transformers 5.
    ("`is_gradient_checkpointing` is deprecated", FutureWarning),
]


# (logger, message prefix): log lines that say nothing about this run.
LIBRARY_LOGS = [
    # A local Ray started by us keeps Ray's default (token auth on) and says so at every start.
    ("ray._private.authentication.authentication_token_setup", "Token authentication is enabled for this Ray"),
    # Said once when Ray Data's bars are off, which is what we ask for off a terminal.
    ("ray.data._internal.progress", "Progress bars disabled"),
]


class _DropPrefix(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def on_terminal() -> bool:
    return sys.stderr.isatty()


def quiet_ray_data() -> None:
    """Ray Data prints every dataset's execution plan at INFO when it starts; the stages' own lines say more."""
    import ray.data

    ray.data.DataContext.get_current().print_on_execution_start = False


def quiet_worker() -> None:
    for message, category in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def quiet_output() -> None:
    """Progress bars only on a terminal (a log gets no carriage-return bars), and the library warnings off.
    Environment variables, so that the local Ray's workers (started from this process) inherit them."""
    bars = on_terminal()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "0" if bars else "1")
    if not bars:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bars too
    # Ray Train's own DatasetManager actor (not our code, not our workers) sets a Ray Data option that Ray has
    # deprecated; Python's warning filter in the environment reaches that actor too.
    if "exclude_resources" not in os.environ.get("PYTHONWARNINGS", ""):
        extra = "ignore:`ExecutionOptions.exclude_resources` is deprecated:DeprecationWarning"
        os.environ["PYTHONWARNINGS"] = ",".join(x for x in (os.environ.get("PYTHONWARNINGS"), extra) if x)
    quiet_worker()
    for name, prefix in LIBRARY_LOGS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropPrefix) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DropPrefix(prefix))
