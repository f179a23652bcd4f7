"""Turning a model's reply into a validated answer.

`extract_json` finds the JSON object in a reply (code fences, chatter before or after, trailing commas, single
quotes, a reply cut off by the token limit) and says whether it had to repair it. `validate` checks the object
against the output schema. A reply that cannot be repaired or validated is a failure with its reason; nothing is
ever invented to replace it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .schemas import MAX_NEGATIVE_WORDS, SCHEMAS

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")

OK, REPAIRED, FAILED = "ok", "repaired", "failed"


@dataclass
class Parsed:
    status: str  # ok | repaired | failed
    value: dict | None
    error: str | None = None


def _close(fragment: str) -> str:
    """Close an object cut off mid-way: an open string, then open brackets, innermost first."""
    stack, in_str, esc = [], False, False
    for ch in fragment:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    out = fragment
    if esc:
        out = out[:-1]
    if in_str:
        out += '"'
    out = re.sub(r',\s*"[^"]*"\s*:?\s*$', "", out)  # a key without a value
    out = re.sub(r"[,:]\s*$", "", out)
    return out + "".join(reversed(stack))


def _balanced(text: str, start: int) -> str | None:
    depth, in_str, esc = 0, False, False
    for k in range(start, len(text)):
        ch = text[k]
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start: k + 1]
    return None


def extract_json(reply: str) -> tuple[Any, bool, str | None]:
    """(object or None, repaired?, error)."""
    if reply is None or not reply.strip():
        return None, False, "empty reply"
    text = reply.strip()
    try:
        return json.loads(text), False, None
    except ValueError:
        pass
    fence = _FENCE.search(text)
    if fence:
        text = fence.group(1).strip()
    start = text.find("{")
    if start < 0:
        return None, False, "no JSON object in the reply"
    candidate = _balanced(text, start)
    truncated = candidate is None
    if truncated:
        candidate = _close(text[start:])
    attempts = [candidate, _TRAILING_COMMA.sub(r"\1", candidate)]
    if "'" in candidate and '"' not in candidate:
        attempts.append(candidate.replace("'", '"'))
    for attempt in attempts:
        try:
            return json.loads(attempt), True, None
        except ValueError:
            continue
    return None, False, "unparseable JSON" + (" (reply was cut off)" if truncated else "")


def validate(kind: str, reply: str) -> Parsed:
    obj, repaired, err = extract_json(reply)
    if obj is None:
        return Parsed(FAILED, None, err)
    if not isinstance(obj, dict):
        return Parsed(FAILED, None, f"expected a JSON object, got {type(obj).__name__}")
    model = SCHEMAS[kind]
    if kind == "hard_negative" and isinstance(obj.get("hard_negative_item"), str):
        words = obj["hard_negative_item"].split()
        if len(words) > MAX_NEGATIVE_WORDS:  # over the word limit: keep the first words, and say so
            obj["hard_negative_item"] = " ".join(words[:MAX_NEGATIVE_WORDS])
            repaired = True
    try:
        value = model.model_validate(obj).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        return Parsed(FAILED, None, f"{'.'.join(map(str, first['loc'])) or 'answer'}: {first['msg']}")
    return Parsed(REPAIRED if repaired else OK, value)
