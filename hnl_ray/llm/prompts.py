"""Prompt templates are files (hnl_ray/llm/prompts/<domain>/<kind>.txt): a `[system]` part and a `[user]` part,
the latter a Jinja2 template. `llm.prompts_dir` overrides them file by file.

Templates are data, not code: they render in Jinja2's sandbox (no attribute starting with `_`, no calls to unsafe
methods), a template naming such an attribute (`__class__`, `_x`) is refused when it loads, and `{% include %}`
or `{% import %}` reach only files inside the template's own folder (no `..`, no symlink leading out).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment

from ..data.errors import DataError
from ..errors import MissingInput

PACKAGED = Path(__file__).parent / "prompts"
KINDS = ("item_profile", "user_profile", "hard_negative")
DOMAIN_OF_FORMAT = {"yelp": "businesses", "movielens": "movies"}


class PromptTemplateError(DataError):
    """A prompt template that cannot be used; the message names its file."""


class _FolderLoader(jinja2.FileSystemLoader):
    """Includes resolved inside one folder only: jinja2 already refuses `..`; a symlink leading out is refused
    here too."""

    def get_source(self, environment, template):
        source, filename, uptodate = super().get_source(environment, template)
        root = os.path.realpath(self.searchpath[0])
        if os.path.commonpath([root, os.path.realpath(filename)]) != root:
            raise jinja2.TemplateNotFound(f"{template} (leads outside {root})")
        return source, filename, uptodate


def _private_names(tree: nodes.Template) -> list[str]:
    names = [n.attr for n in tree.find_all(nodes.Getattr) if n.attr.startswith("_")]
    names += [n.arg.value for n in tree.find_all(nodes.Getitem)
              if isinstance(n.arg, nodes.Const) and isinstance(n.arg.value, str) and n.arg.value.startswith("_")]
    names += [n.name for n in tree.find_all(nodes.Name) if n.name.startswith("_")]
    return names


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
        try:
            return self.system, self.user.render(**values).strip()
        except jinja2.exceptions.SecurityError as exc:
            raise PromptTemplateError(f"{self.path}: refused by the template sandbox: {exc}") from None
        except jinja2.TemplateNotFound as exc:
            raise PromptTemplateError(f"{self.path}: included template not found in its folder: {exc}") from None


def domain_for(domain: str, data_format: str) -> str:
    return DOMAIN_OF_FORMAT.get(data_format, "products") if domain == "auto" else domain


def load(kind: str, domain: str, prompts_dir: str | None = None) -> Template:
    candidates = ([Path(prompts_dir) / domain / f"{kind}.txt", Path(prompts_dir) / f"{kind}.txt"]
                  if prompts_dir else []) + [PACKAGED / domain / f"{kind}.txt"]
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        raise MissingInput(f"no prompt template for {kind} ({domain}); looked at "
                                f"{', '.join(map(str, candidates))}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptTemplateError(f"{path}: cannot read the template: {exc}") from None
    if "[system]" not in text or "[user]" not in text:
        raise PromptTemplateError(f"{path}: a template needs a [system] and a [user] section")
    system, user = text.split("[user]", 1)
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False,
                               loader=_FolderLoader(str(path.parent)))
    try:
        body = user.strip("\n")
        private = _private_names(env.parse(body))
        if private:
            raise PromptTemplateError(f"{path}: templates may not use names starting with '_' "
                                      f"({', '.join(sorted(set(private)))}): they reach Python internals")
        compiled = env.from_string(body)
    except jinja2.TemplateSyntaxError as exc:
        raise PromptTemplateError(f"{path}: template syntax error at line {exc.lineno}: {exc.message}") from None
    return Template(kind, system.replace("[system]", "", 1).strip(), compiled, text, str(path))
