"""Prompt templates are files (hnl_ray/llm/prompts/<domain>/<kind>.txt): a `[system]` part and a `[user]` part,
the latter a Jinja2 template. `llm.prompts_dir` overrides them file by file."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import jinja2

from ..data.errors import DataError
from ..errors import MissingInput

PACKAGED = Path(__file__).parent / "prompts"
KINDS = ("item_profile", "user_profile", "hard_negative")
DOMAIN_OF_FORMAT = {"yelp": "businesses", "movielens": "movies"}


@dataclass(frozen=True)
class Template:
    kind: str
    system: str
    user: jinja2.Template
    source: str
    path: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:16]

    def render(self, **values) -> tuple[str, str]:
        return self.system, self.user.render(**values).strip()


def domain_for(domain: str, data_format: str) -> str:
    return DOMAIN_OF_FORMAT.get(data_format, "products") if domain == "auto" else domain


def load(kind: str, domain: str, prompts_dir: str | None = None) -> Template:
    candidates = ([Path(prompts_dir) / domain / f"{kind}.txt", Path(prompts_dir) / f"{kind}.txt"]
                  if prompts_dir else []) + [PACKAGED / domain / f"{kind}.txt"]
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        raise MissingInput(f"no prompt template for {kind} ({domain}); looked at "
                                f"{', '.join(map(str, candidates))}")
    text = path.read_text()
    if "[system]" not in text or "[user]" not in text:
        raise DataError(f"{path}: a template needs a [system] and a [user] section")
    system, user = text.split("[user]", 1)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)
    return Template(kind, system.replace("[system]", "", 1).strip(), env.from_string(user.strip("\n")), text,
                    str(path))
