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
    assert "gpu" in cfg["docker"]["image"] and any("hnl-ray" in c and "[gpu]" in c for c in cfg["setup_commands"])


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
