"""Typed configuration: pydantic models, YAML files, `--set` overrides."""

from .loader import ConfigError, load_config, parse_set
from .root import Config

__all__ = ["Config", "ConfigError", "load_config", "parse_set"]
