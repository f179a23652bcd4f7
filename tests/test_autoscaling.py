"""GPU stages on an autoscaling cluster whose GPU node type starts at zero nodes (as cluster.yaml's do), on Ray's
fake autoscaling cluster: nodes with a logical GPU are launched by the real autoscaler as local processes.

The cluster is started here rather than with `AutoscalingCluster.start()`, which runs `ray stop --force` (it would
end every Ray on a shared machine); it gets its own port and temp dir, and only its processes are ended."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow

SCENARIO = r"""
import json, sys, time
import pyarrow as pa
import ray
from hnl_ray.config import load_config
from hnl_ray.llm.engines.base import build_engine
from hnl_ray.llm.generate import run_generation
from hnl_ray.storage import read_shards
from hnl_ray.ray_utils import ResourceUnavailable, ensure_resources, init_ray
from hnl_ray.storage import RunDir

address, model, out_dir = sys.argv[1:4]
cfg = load_config(sets=[f"ray.address={address}", "ray.resource_wait_s=240", f"llm.model={model}",
                        "llm.num_gpus=1", "llm.num_cpus=1", "llm.max_new_tokens=12", "llm.batch_size=2",
                        "llm.retries=0", "llm.shard_rows=2"])
init_ray(cfg)
gpus_before = ray.cluster_resources().get("GPU", 0)
prompts = pa.Table.from_pylist([{"id": f"item:{k}", "item_idx": k, "kind": "item_profile", "system": "Answer in JSON.",
                                 "user": f"Describe toy {k}."} for k in range(3)])
t0 = time.time()
counts = run_generation(RunDir(out_dir), "gen", prompts, build_engine(cfg.llm), cfg.llm, seed=0,
                        key_columns=("item_idx",))
gen_s = time.time() - t0
rows = read_shards(RunDir(out_dir), "gen").num_rows
gpus_after = ray.cluster_resources().get("GPU", 0)
t0 = time.time()
try:
    ensure_resources([{"GPU": 1, "accelerator_type:H100": 0.001}], "finetune (accelerator_type=H100)", wait_s=15)
    impossible = None
except ResourceUnavailable as exc:
    impossible = str(exc)
print(json.dumps({"gpus_before": gpus_before, "gpus_after": gpus_after, "rows": rows, "generated": counts.generated,
                  "gen_s": gen_s, "impossible": impossible, "impossible_s": time.time() - t0}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_cluster_config(worker_node_types: dict) -> dict:
    """What `ray.cluster_utils.AutoscalingCluster` writes (its template, fake_multi_node/example.yaml, is not in
    the ray wheel): the fake_multinode provider launches each node as local Ray processes."""
    return {"cluster_name": "hnl-fake", "max_workers": 2, "upscaling_speed": 1.0, "idle_timeout_minutes": 5,
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True},
            "head_node_type": "ray.head.default",
            "available_node_types": {"ray.head.default": {"resources": {"CPU": 1}, "node_config": {},
                                                          "max_workers": 0}, **worker_node_types},
            "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [], "rsync_exclude": [],
            "rsync_filter": [], "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
            "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
            "file_mounts_sync_continuously": False}


@pytest.fixture
def autoscaling_cluster():
    # a head without GPUs and one GPU node type that starts at zero nodes, as in cluster.yaml
    gpu_node = {"resources": {"CPU": 1, "GPU": 1, "object_store_memory": 150 * 2**20}, "node_config": {},
                "min_workers": 0, "max_workers": 1}
    config = fake_cluster_config({"gpu_node": gpu_node})
    temp_dir = tempfile.mkdtemp(prefix="hnlas", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = _free_port()
    import ray._private.services

    # the fake provider's nodes join this head (its default would be port 6379); set before the file is written
    config["provider"]["gcs_address"] = f"{ray._private.services.get_node_ip_address()}:{port}"
    config_file = os.path.join(temp_dir, "autoscaling.json")
    with open(config_file, "w") as f:
        json.dump(config, f)
    env = {"RAY_agent_register_timeout_ms": "300000", **os.environ, "AUTOSCALER_UPDATE_INTERVAL_S": "1",
           "RAY_FAKE_CLUSTER": "1", "RAY_AUTH_MODE": "disabled"}  # a long agent wait: loaded shared machines
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    try:
        started = subprocess.run([ray_bin, "start", "--head", f"--port={port}", f"--temp-dir={temp_dir}",
                                  "--num-cpus=1", "--object-store-memory=200000000", "--include-dashboard=false",
                                  f"--autoscaling-config={config_file}"], env=env, capture_output=True, text=True)
        assert started.returncode == 0, started.stderr[-2000:]
        yield f"127.0.0.1:{port}", env
    finally:
        for p in psutil.process_iter(["pid", "cmdline"]):  # this cluster's processes only, each by its id
            try:
                if p.info["cmdline"] and any(temp_dir in a or f":{port}" in a for a in p.info["cmdline"]) \
                        and p.pid != os.getpid():
                    p.kill()
            except psutil.Error:
                pass


def test_a_gpu_stage_makes_the_autoscaler_add_the_node_and_an_impossible_one_fails_naming_it(
        autoscaling_cluster, tiny_llm, tmp_path):
    address, env = autoscaling_cluster
    env = {**env, "PYTHONPATH": REPO, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", SCENARIO, address, tiny_llm, str(tmp_path / "run")], env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["gpus_before"] == 0  # the head has none: a count-based check would have refused the stage
    assert r["gpus_after"] == 1 and r["rows"] == 3 and r["generated"] == 3
    assert r["impossible"] and "accelerator_type:H100" in r["impossible"] and "within 15 s" in r["impossible"]
    assert 15 <= r["impossible_s"] < 60, r
    print(f"scenario {time.time() - t0:.0f} s, generation incl. node launch {r['gen_s']:.0f} s")
