"""cluster.yaml against the schema inside the installed ray package; the job upload check."""

import json
import os

import pytest
import yaml

from hnl_ray.upload import check_upload

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cluster_yaml_matches_rays_schema():
    import jsonschema
    import ray

    schema = json.load(open(os.path.join(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json")))
    cfg = yaml.safe_load(open(os.path.join(REPO, "cluster.yaml")))
    jsonschema.validate(cfg, schema)
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types and types[cfg["head_node_type"]]["resources"].get("GPU", 0) == 0
    gpu_types = [n for n, t in types.items() if t["resources"].get("GPU", 0) > 0]
    assert len(gpu_types) >= 2 and all("max_workers" in types[n] for n in gpu_types)
    # GPU types start at zero nodes: stages ask the autoscaler (ray_utils.ensure_resources), never count live GPUs
    assert all(types[n].get("min_workers", 0) == 0 for n in gpu_types)
    # an image with vLLM at the version ray[llm]==RAY pins, so no node installs it at start
    assert cfg["docker"]["image"].startswith(f"rayproject/ray-llm:{ray.__version__}-")
    assert any("pip install" in c and "hnl-ray" in c for c in cfg["setup_commands"])
    for name, t in types.items():
        # a current GPU AMI, resolved by EC2 at launch (Ray's built-in default DLAMI has CUDA 11.2)
        assert t["node_config"]["ImageId"].startswith("resolve:ssm:/aws/service/deeplearning/ami/"), name
    for n in gpu_types:
        # workers read and write s3:// run directories: Ray attaches its IAM profile to the head only
        assert types[n]["node_config"]["IamInstanceProfile"]["Name"], n
        # an accelerator type per node type, which stages select (finetune.accelerator_type, llm.vllm.*)
        assert any(k.startswith("accelerator_type:") for k in types[n]["resources"]), n


def test_presets_pin_each_stage_to_its_node_type():
    from hnl_ray.config import load_config

    cfg = yaml.safe_load(open(os.path.join(REPO, "cluster.yaml")))
    offered = {k.split(":", 1)[1] for t in cfg["available_node_types"].values() for k in t["resources"]
               if k.startswith("accelerator_type:")}
    for preset in ("qwen2.5-7b-gpu", "llama3-8b-gpu"):
        c = load_config(os.path.join(REPO, "configs", "presets", f"{preset}.yaml"))
        assert c.finetune.accelerator_type in offered and c.llm.vllm.accelerator_type in offered, preset


def test_runtime_env_leaves_hub_access_and_secrets_to_the_environment():
    env = yaml.safe_load(open(os.path.join(REPO, "runtime_env.yaml")))
    assert "HF_HUB_OFFLINE" not in env.get("env_vars", {})  # hub ids in the presets must load on online clusters
    assert not any("TOKEN" in k or "SECRET" in k or "KEY" in k for k in env.get("env_vars", {}))


def test_runtime_env_keeps_the_upload_small():
    assert "working directory upload" in check_upload(REPO, os.path.join(REPO, "runtime_env.yaml"))
    env = yaml.safe_load(open(os.path.join(REPO, "runtime_env.yaml")))
    assert ".venv/" in env["excludes"] and "runs/" in env["excludes"]


def test_oversized_working_dir_names_the_paths_to_exclude(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.bin").write_bytes(b"\0" * 300_000)
    (tmp_path / "code.py").write_text("print(1)\n")
    with pytest.raises(ValueError, match=r"over Ray's .* limit\. Exclude the largest paths .*data \(0\.3 MiB\)"):
        check_upload(str(tmp_path), None, limit=100_000)
    (tmp_path / "env.yaml").write_text("excludes: [data/]\n")
    assert "working directory upload" in check_upload(str(tmp_path), str(tmp_path / "env.yaml"), limit=100_000)
