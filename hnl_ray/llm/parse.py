"""Turning a model's reply into a validated answer.

`extract_json` finds the JSON object in a reply (code fences, chatter before or after, trailing commas, single
quotes, a reply cut off by the token limit) and says whether it had to repair it, and whether the repair had to
close a string or bracket (the reply stopped inside its JSON). `validate` checks the object against the output
schema. A reply that cannot be repaired or validated is a failure with its reason; nothing is ever invented to
replace it.

Statuses: `ok`; `repaired` (fences, chatter, commas, quotes or the word limit fixed, nothing lost); `truncated`
(the reply was cut off: the repair closed a string/bracket, or the engine said `finish_reason: length` and the
JSON needed any repair): what it says may be cut mid-sentence, so generation retries it first and keeps it,
marked, only from the last attempt; `failed`.
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

OK, REPAIRED, TRUNCATED, FAILED = "ok", "repaired", "truncated", "failed"


@dataclass
class Parsed:
    status: str  # ok | repaired | truncated | failed
    value: dict | None
    error: str | None = None


class _Strings:
    """Walks JSON text tracking string literals: `outside()` yields (index, char) of the characters that are
    not inside a string (an opening quote is yielded; what follows it up to its closing quote is not);
    `in_str` and `esc` tell where the text ended."""

    def __init__(self, text: str, start: int = 0):
        self.text, self.start, self.in_str, self.esc = text, start, False, False

    def outside(self):
        for k in range(self.start, len(self.text)):
            ch = self.text[k]
            if self.in_str:
                if self.esc:
                    self.esc = False
                elif ch == "\\":
                    self.esc = True
                elif ch == '"':
                    self.in_str = False
                continue
            if ch == '"':
                self.in_str = True
            yield k, ch


def _close(fragment: str) -> str:
    """Close an object cut off mid-way: an open string, then open brackets, innermost first."""
    stack, walk = [], _Strings(fragment)
    for _, ch in walk.outside():
        if ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    out = fragment
    if walk.esc:
        out = out[:-1]
    if walk.in_str:
        out += '"'
    out = re.sub(r',\s*"[^"]*"\s*:?\s*$', "", out)  # a key without a value
    out = re.sub(r"[,:]\s*$", "", out)
    return out + "".join(reversed(stack))


def _balanced(text: str, start: int) -> str | None:
    depth = 0
    for k, ch in _Strings(text, start).outside():
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start: k + 1]
    return None


def extract_json(reply: str) -> tuple[Any, bool, str | None]:
    """(object or None, repaired?, error)."""
    obj, repaired, _closed, err = extract_json_ex(reply)
    return obj, repaired, err


def extract_json_ex(reply: str) -> tuple[Any, bool, bool, str | None]:
    """(object or None, repaired?, closed a cut-off string or bracket?, error)."""
    if reply is None or not reply.strip():
        return None, False, False, "empty reply"
    text = reply.strip()
    try:
        return json.loads(text), False, False, None
    except (ValueError, RecursionError):
        pass
    fence = _FENCE.search(text)
    if fence:
        text = fence.group(1).strip()
    start = text.find("{")
    if start < 0:
        return None, False, False, "no JSON object in the reply"
    candidate = _balanced(text, start)
    truncated = candidate is None
    if truncated:
        candidate = _close(text[start:])
    attempts = [candidate, _TRAILING_COMMA.sub(r"\1", candidate)]
    if "'" in candidate and '"' not in candidate:
        attempts.append(candidate.replace("'", '"'))
    for attempt in attempts:
        try:
            return json.loads(attempt), True, truncated, None
        except (ValueError, RecursionError):
            continue
    return None, False, truncated, "unparseable JSON" + (" (reply was cut off)" if truncated else "")


def validate(kind: str, reply: str, cut_off: bool = False) -> Parsed:
    """The answer in `reply`. `cut_off`: the engine says generation stopped at the token limit."""
    obj, repaired, closed, err = extract_json_ex(reply)
    if obj is None:
        err = err or "the reply is JSON null, not an object"
        return Parsed(FAILED, None, err + (" (stopped at the token limit)" if cut_off else ""))
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
        cut = " (the reply was cut off)" if closed or cut_off else ""
        return Parsed(FAILED, None, f"{'.'.join(map(str, first['loc'])) or 'answer'}: {first['msg']}{cut}")
    if closed or (cut_off and repaired):
        return Parsed(TRUNCATED, value, "the reply was cut off (token limit): its last field may be incomplete")
    return Parsed(REPAIRED if repaired else OK, value)
