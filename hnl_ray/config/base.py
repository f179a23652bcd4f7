"""Shared pydantic base for every config section: unknown keys are errors."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_name(v: str) -> str:
    """A name that becomes a folder: letters, digits, '_', '-', '.', not starting with '.' (no `../`)."""
    if not NAME_PATTERN.match(v):
        raise ValueError(f"{v!r} is not a safe name: use letters, digits, '_', '-', '.' (first a letter or "
                         "digit, at most 100), since it names a folder")
    return v


SafeName = Annotated[str, AfterValidator(check_name)]


class Section(BaseModel):
    """A config section. Unknown keys fail validation instead of being ignored silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())
