"""hnl-ray: LLM-written hard negatives for collaborative filtering, scaled on Ray."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hnl-ray")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"
