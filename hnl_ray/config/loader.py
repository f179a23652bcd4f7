"""Load a config: model defaults < YAML file (with `extends:`) < `--set dotted.key=value` overrides.

Validation errors are rewritten to name the dotted key, the allowed keys or values, and the value given.
"""

from __future__ import annotations

import copy
import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import HnlRayError
from .data import DataSource
from .root import Config

_FORMATS = [m.model_fields["format"].annotation for m in typing.get_args(typing.get_args(DataSource)[0])]


class ConfigError(HnlRayError, ValueError):
    """A config that cannot be used; the message names the file and the dotted keys at fault."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last one silently)."""


def _mapping_without_duplicates(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: SafeLoader reports it below
            continue
        line = key_node.start_mark.line + 1
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given at line {first})", key_node.start_mark)
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def safe_load(text: str) -> Any:
    """Parse YAML text: the safe loader, duplicate keys refused."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def parse_set(expr: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value); the value is parsed as YAML (`3` -> 3, `[1,2]` -> list)."""
    if "=" not in expr:
        raise ConfigError(f"--set {expr!r}: expected dotted.key=value")
    key, raw = expr.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"--set {expr!r}: empty component in key {key!r}")
    try:
        value = safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: a date like 2020-13-45
        raise ConfigError(f"--set {expr!r}: value is not valid YAML: {exc}") from None
    return parts, value


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            # A new data `format` replaces the whole source block: its keys belong to another reader.
            if "format" in v and v.get("format") != out[k].get("format"):
                out[k] = copy.deepcopy(v)
            else:
                out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: `extends` forms a cycle: {' -> '.join(map(str, seen + (path,)))}")
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        raw = safe_load(text)
    except (yaml.YAMLError, ValueError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty (or only comments); a config needs at least one key")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(raw).__name__}")
    parents = raw.pop("extends", None)
    if parents is None:
        return raw
    merged: dict = {}
    for parent in [parents] if isinstance(parents, str) else list(parents):
        merged = deep_merge(merged, _read_yaml(path.parent / parent, seen + (path,)))
    return deep_merge(merged, raw)


def load_config(path: str | Path | None = None, sets: list[str] | None = None, run_dir: str | None = None,
                base: dict | None = None) -> Config:
    """Build a validated Config. `base` (a dict) sits between the defaults and the file."""
    raw: dict = copy.deepcopy(base) if base else {}
    origin = "defaults"
    if path is not None:
        raw = deep_merge(raw, _read_yaml(Path(path)))
        origin = str(path)
    if "data" not in raw:  # the default source, so that `--set data.n_users=...` layers onto it
        raw["data"] = {"format": "synthetic"}
    for expr in sets or []:
        keys, value = parse_set(expr)
        node = raw
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    if sets:
        origin += " with --set overrides"
    if run_dir is not None:
        raw["run_dir"] = run_dir
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(err, raw) for err in exc.errors()]
        raise ConfigError(f"invalid config ({origin}):\n  " + "\n  ".join(lines)) from None


# ---------------------------------------------------------------- error messages

def _union_member(annotation: Any, raw: Any) -> type[BaseModel] | None:
    """The model a (possibly discriminated-union / optional) annotation resolves to for this raw value."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        return _union_member(args[0], raw)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    if len(models) == 1:
        return models[0]
    for m in models:
        tag = m.model_fields.get("format")
        if tag is not None and isinstance(raw, dict) and raw.get("format", tag.default) == tag.default:
            return m
    return None


def _walk(loc: tuple, raw: dict) -> tuple[list[str], type[BaseModel] | None, Any]:
    """Clean a pydantic location (dropping union tags) and find the model that holds its last key."""
    model: type[BaseModel] | None = Config
    node: Any = raw
    parts: list[str] = []
    holder: type[BaseModel] | None = Config
    for el in loc:
        if isinstance(node, dict) and el not in node and isinstance(el, str) and node.get("format") == el:
            continue  # discriminated-union tag inserted by pydantic
        if model is None and isinstance(node, dict) and el not in node and isinstance(el, str):
            continue  # union tag of a member we could not resolve
        parts.append(str(el))
        holder = model
        field = model.model_fields.get(el) if (model is not None and isinstance(el, str)) else None
        node = node.get(el) if isinstance(node, dict) else (
            node[el] if isinstance(node, list) and isinstance(el, int) and el < len(node) else None)
        model = _union_member(field.annotation, node) if field is not None else None
    return parts, holder, node


def _describe(err: dict, raw: dict) -> str:
    parts, holder, _ = _walk(tuple(err["loc"]), raw)
    key = ".".join(parts) or "<root>"
    kind = err["type"]
    if kind == "extra_forbidden" and holder is not None:
        allowed = sorted(holder.model_fields)
        hint = difflib.get_close_matches(parts[-1], allowed, n=1)
        did = f"; did you mean '{hint[0]}'?" if hint else ""
        return f"{key}: unknown key{did} (allowed here: {', '.join(allowed)})"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        key += ".format"
        if kind == "union_tag_not_found":
            tags = sorted(typing.get_args(m)[0] for m in _FORMATS)
            return f"{key}: missing; say which reader to use: {', '.join(tags)}"
    msg = err["msg"].removeprefix("Value error, ")
    if key == "<root>" and kind == "value_error":
        return msg  # a cross-section check: its message names the keys
    got = err.get("input")
    shown = "" if isinstance(got, dict) or kind == "missing" or repr(got) in msg else f" (got {got!r})"
    return f"{key}: {msg}{shown}"
