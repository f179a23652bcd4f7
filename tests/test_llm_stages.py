"""The LLM stages end to end on the demo data: the real offline model, the HTTP path, killing and resuming."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from hnl_ray.arrays import vectors
from hnl_ray.config import load_config
from hnl_ray.llm.engines.base import build_engine
from hnl_ray.llm.generate import run_generation
from hnl_ray.llm.server import ChatServer
from hnl_ray.stages import run_stage
from hnl_ray.stages.embed import items_fingerprint
from hnl_ray.storage import read_shards
from hnl_ray.storage import RunDir

SMALL = ["data.n_users=16", "data.n_items=20", "filters.k_core.user=2", "filters.k_core.item=2",
         "llm.max_new_tokens=72", "llm.batch_size=16", "profiles.user_history=6", "profiles.user_token_budget=160",
         "negatives.pairs_per_user=1"]


@pytest.mark.slow
def test_real_model_writes_parseable_profiles_negatives_and_embeddings(ray_session, smollm2, tmp_path):
    cfg = load_config("configs/demo.yaml", SMALL, run_dir=str(tmp_path))
    run = RunDir(str(tmp_path))
    run_stage("prepare", cfg)
    res = run_stage("profiles", cfg, run)
    rates = {}
    for part in ("items", "users"):
        st = res[part]["status"]
        rates[part] = (st.get("ok", 0) + st.get("repaired", 0)) / res[part]["rows"]
    assert run_stage("embed", cfg, run)["negatives"] == 0  # the catalog first (the teacher needs it, not the negatives)
    items_fp = json.loads((tmp_path / "embeddings" / "manifest.json").read_text())["items_fingerprint"]
    neg = run_stage("negatives", cfg, run)
    rates["negatives"] = (neg["status"].get("ok", 0) + neg["status"].get("repaired", 0)) / neg["rows"]
    print(f"\nSmolLM2-135M parse success (ok + repaired) on the demo data: {rates}")
    assert min(rates.values()) >= 0.9, rates
    assert res["items"]["rows"] == pq.read_table(tmp_path / "prepared" / "items.parquet").num_rows
    emb = run_stage("embed", cfg, run)
    # new negatives re-run the stage but leave the catalog's fingerprint, which the teacher keys on, unchanged
    m = json.loads((tmp_path / "embeddings" / "manifest.json").read_text())
    assert emb["negatives"] > 0 and m["items_fingerprint"] == items_fp and items_fingerprint(m) == items_fp
    items = pq.read_table(tmp_path / "embeddings" / "items.parquet")
    v = vectors(items["vector"])
    assert v.shape == (emb["items"], 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    negs = pq.read_table(tmp_path / "embeddings" / "negatives.parquet").to_pylist()
    train = pq.read_table(tmp_path / "prepared" / "train.parquet")
    pos = set(zip(train["user_idx"].to_pylist(), train["item_idx"].to_pylist()))
    assert negs and all((r["user_idx"], g) not in pos for r in negs for g in r["grounded"] if g >= 0)
    # a second run is a no-op
    assert run_stage("profiles", cfg, run)["items"].get("skipped") and run_stage("embed", cfg, run).get("skipped")


@pytest.mark.slow
def test_http_engine_against_a_local_openai_compatible_server(ray_session, smollm2, tmp_path):
    srv = ChatServer(smollm2, port=0, max_new_tokens=64).start()
    try:
        cfg = load_config(sets=["llm.engine=http", f"llm.http.url=http://127.0.0.1:{srv.port}/v1/chat/completions",
                                "llm.max_new_tokens=64", "llm.batch_size=4", "llm.http.qps=5"]).llm
        import pyarrow as pa

        rows = pa.Table.from_pylist([{"id": f"item:{k}", "item_idx": k, "kind": "item_profile",
                                      "system": "Describe who would enjoy the product, in JSON.",
                                      "user": f"PRODUCT\ntitle: {t}"} for k, t in
                                     enumerate(["Dino Puzzle 300 pieces", "Galaxy Rocket Building Set",
                                                "Ocean Plush Dolphin"])])
        counts = run_generation(RunDir(str(tmp_path)), "http", rows, build_engine(cfg), cfg, seed=0,
                                key_columns=("item_idx",))
        out = read_shards(RunDir(str(tmp_path)), "http")
        assert counts.generated == 3 and counts.ok + counts.repaired == 3, counts.as_dict()
        assert all(out["summarization"].to_pylist()) and counts.gen_tokens > 0
    finally:
        srv.stop()


KILL_SCRIPT = r"""
import sys
from hnl_ray.config import load_config
from hnl_ray.stages import run_stage
cfg = load_config(sets=sys.argv[2:], run_dir=sys.argv[1])
run_stage("prepare", cfg)
print(run_stage("profiles", cfg)["items"]["this_run"])
"""


def test_killed_generation_resumes_without_duplicates_or_redoing_work(tiny_llm, tmp_path):
    sets = [f"llm.model={tiny_llm}", "data.n_users=60", "data.n_items=120", "filters.k_core.user=1",
            "filters.k_core.item=1", "llm.max_new_tokens=48", "llm.batch_size=3", "llm.shard_rows=3",
            "profiles.max_users=2", "ray.num_cpus=2"]
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-c", KILL_SCRIPT, str(run_dir), *sets]
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    shards = run_dir / "profiles" / "items"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(shards.glob("part-*.parquet"))) < 3:
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local Ray, mid-run
    proc.wait()
    before = {p.name: p.read_bytes() for p in shards.glob("part-*.parquet")}
    done_before = sum(pq.read_table(shards / n).num_rows for n in before)
    n_items = pq.read_table(run_dir / "prepared" / "items.parquet").num_rows
    assert 0 < done_before < n_items and not (shards / "manifest.json").exists()

    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    ids = read_shards(RunDir(str(run_dir)), "profiles/items")["id"].to_pylist()
    assert len(ids) == len(set(ids)) == n_items  # every id exactly once
    for name, data in before.items():  # nothing finished was redone or rewritten
        assert (shards / name).read_bytes() == data
    import json

    counts = json.loads((shards / "manifest.json").read_text())["counts"]["this_run"]
    assert counts["already_done"] == done_before and counts["generated"] == n_items - done_before
