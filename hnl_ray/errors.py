"""The errors a user can cause (bad config, bad input data, a stage run out of order, an unusable setup).

Every one derives from `HnlRayError`: the CLI prints it in one line on every subcommand, never as a traceback.
Anything else escaping a stage is a bug and keeps its traceback.
"""

from __future__ import annotations


class HnlRayError(Exception):
    """Base of every user-causable error."""


class MissingInput(HnlRayError, FileNotFoundError):
    """A stage's input does not exist yet; the message names the stage to run first."""


class UsageError(HnlRayError, ValueError):
    """A command-line argument names something that does not exist (a stage, a run)."""


class ConfigValueError(HnlRayError, ValueError):
    """A config value that is valid on its own but cannot work with this data (the message names the key)."""


class StageError(HnlRayError, RuntimeError):
    """A stage cannot run in this setup, or its result failed a check (the message says which and why)."""
