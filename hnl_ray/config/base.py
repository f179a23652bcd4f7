"""Shared pydantic base for every config section: unknown keys are errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section. Unknown keys fail validation instead of being ignored silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())
