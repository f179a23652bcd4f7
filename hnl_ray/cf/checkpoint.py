"""Resumable checkpoints as safetensors (model, optimiser, torch RNG) plus a JSON state (epoch, early-stopping
state, numpy RNG). Written through the run directory, so they work on any pyarrow filesystem."""

from __future__ import annotations

from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..storage import RunDir


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for pid, state in opt.state_dict()["state"].items():
        for name, val in state.items():
            out[f"{pid}.{name}"] = (val if torch.is_tensor(val) else torch.tensor(val)).detach().cpu().contiguous()
    return out


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], device: torch.device) -> None:
    sd = opt.state_dict()
    state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = val.to(device) if name != "step" else val
    sd["state"] = state
    opt.load_state_dict(sd)


def save(run: RunDir, folder: str, model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    tensors = {f"model.{k}": v for k, v in model_tensors(model).items()}
    tensors.update({f"optim.{k}": v for k, v in optimizer_tensors(opt).items()})
    tensors["rng.torch"] = torch.get_rng_state()
    run.write_bytes(f"{folder}/last.safetensors", st_save(tensors))
    run.write_json(f"{folder}/state.json", state)  # written last: its presence marks a complete checkpoint


def load(run: RunDir, folder: str, model: torch.nn.Module, opt: torch.optim.Optimizer,
         device: torch.device) -> dict | None:
    if not (run.exists(folder, "state.json") and run.exists(folder, "last.safetensors")):
        return None
    state = run.read_json(f"{folder}/state.json")
    tensors = st_load(run.read_bytes(f"{folder}/last.safetensors"))
    model.load_state_dict({k[6:]: v.to(device) for k, v in tensors.items() if k.startswith("model.")},
                          strict=False)
    load_optimizer(opt, {k[6:]: v for k, v in tensors.items() if k.startswith("optim.")}, device)
    torch.set_rng_state(tensors["rng.torch"])
    return state


def save_weights(run: RunDir, rel: str, model: torch.nn.Module) -> None:
    run.write_bytes(rel, st_save(model_tensors(model)))


def read_tensors(run: RunDir, rel: str) -> dict[str, torch.Tensor]:
    return st_load(run.read_bytes(rel))


def load_weights(run: RunDir, rel: str, model: torch.nn.Module, device: torch.device) -> None:
    model.load_state_dict({k: v.to(device) for k, v in read_tensors(run, rel).items()}, strict=False)
