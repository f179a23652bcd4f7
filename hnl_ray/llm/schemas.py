"""The JSON each prompt asks for, as pydantic models; their JSON schemas drive constrained decoding."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_NEGATIVE_WORDS = 20


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Profile(_Answer):
    """Item or user profile."""

    summarization: str = Field(..., min_length=1, max_length=1200)
    reasoning: str = Field("", max_length=1500)

    @field_validator("summarization")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty summarization")
        return v.strip()


class HardNegative(_Answer):
    hard_negative_item: str = Field(..., min_length=1, max_length=300)
    reasoning: str = Field("", max_length=1500)

    @field_validator("hard_negative_item")
    @classmethod
    def _short(cls, v: str) -> str:
        v = " ".join(v.split())
        if not v or v.lower() in {"none", "n/a", "null"}:
            raise ValueError("no hard negative named")
        if len(v.split()) > MAX_NEGATIVE_WORDS:
            raise ValueError(f"longer than {MAX_NEGATIVE_WORDS} words")
        return v


SCHEMAS: dict[str, type[_Answer]] = {"item_profile": Profile, "user_profile": Profile,
                                     "hard_negative": HardNegative}

# Length caps in the decoding schema keep a small model from rambling until max_new_tokens.
_CAPS = {"summarization": 180, "reasoning": 110, "hard_negative_item": 100}


def json_schema(kind: str) -> dict:
    """A compact JSON schema for constrained decoding: the fields in order, strings with length caps."""
    model = SCHEMAS[kind]
    props = {name: {"type": "string", "minLength": 1, "maxLength": _CAPS.get(name, 300)}
             for name in model.model_fields}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def json_schema_str(kind: str) -> str:
    return json.dumps(json_schema(kind))
