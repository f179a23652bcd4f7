"""LLM endpoints that misbehave, against a fake OpenAI-compatible server on 127.0.0.1 (tests/fake_openai.py): every
mode gives per-row outcomes with their reason, never an aborted stage or a prompt in a message; too many failed
rows fail the stage, which is then not marked complete; cut-off answers are retried, then kept as `truncated`."""

import asyncio
import random

import pyarrow as pa
import pytest

from fake_openai import FakeOpenAI
from hnl_ray import manifest
from hnl_ray.config import load_config
from hnl_ray.llm import prompts
from hnl_ray.llm.engines.base import build_engine
from hnl_ray.llm.engines.http_session import backoff_s, retry_after_s
from hnl_ray.llm.generate import FailureShareExceeded, run_generation
from hnl_ray.storage import read_shards
from hnl_ray.llm.parse import validate
from hnl_ray.stages import context
from hnl_ray.stages.profiles import generation_stage, llm_identity
from hnl_ray.storage import RunDir

SECRET = "SECRET-PROMPT-TEXT"


def rows(n):
    return pa.Table.from_pylist([{"id": f"item:{k}", "item_idx": k, "kind": "item_profile", "system": "JSON please.",
                                  "user": f"{SECRET} toy {k}"} for k in range(n)])


def llm(url, *more):
    return load_config(sets=["llm.engine=http", f"llm.http.url={url}", "llm.http.max_retries=2",
                             "llm.http.retry_wait_s=0.05", "llm.http.timeout_s=3", "llm.retries=1",
                             "llm.batch_size=4", "llm.shard_rows=4", "llm.max_failure_share=0.5", *more]).llm


def generate(tmp_path, mode, n=4, *more, fail_users=None):
    with FakeOpenAI(mode, fail_users=fail_users) as srv:
        cfg = llm(srv.url, *more)
        run = RunDir(str(tmp_path))
        try:
            counts = run_generation(run, "gen", rows(n), build_engine(cfg), cfg, seed=0, key_columns=("item_idx",))
            err = None
        except FailureShareExceeded as exc:
            counts, err = None, exc
        out = {r["id"]: r for r in (read_shards(run, "gen") or pa.table({"id": []})).to_pylist()}
        return counts, err, out, srv


TRANSIENT = {"toy 0": "429", "toy 1": "500_then_ok", "toy 2": "hang_then_ok", "toy 3": "truncated_body"}
FAILING = {"toy 0": "html", "toy 1": "all_fail", "toy 2": "bad_key", "toy 3": "all_fail"}


def test_transient_failures_are_retried_to_an_answer(ray_session, tmp_path):
    import time

    t0 = time.perf_counter()
    counts, err, out, srv = generate(tmp_path, TRANSIENT)  # one row per mode, in one pipeline
    assert err is None and counts.ok == 4 and counts.failed == 0 and counts.engine_errors == 0
    assert all(r["status"] == "ok" and r["summarization"] == "A fine item for kids" for r in out.values())
    assert dict(srv.asked) == {f"{SECRET} {k}": 2 for k in TRANSIENT}  # one failure, one retry each
    assert time.perf_counter() - t0 >= 1.0  # the 429's Retry-After: 1 was waited (retry_wait_s is 0.05)


def test_endpoint_that_keeps_failing_fails_rows_then_the_stage(ray_session, tmp_path):
    counts, err, out, srv = generate(tmp_path, FAILING)
    assert isinstance(err, FailureShareExceeded)
    msg = str(err)
    assert "4 of 4 rows failed" in msg and "HTTP 500" in msg and SECRET not in msg
    reasons = {"toy 0": "the answer is not JSON (text/html", "toy 1": "HTTP 500", "toy 2": "HTTP 401"}
    for k, reason in reasons.items():
        r = out[f"item:{k[-1]}"]
        assert r["status"] == "failed" and reason in r["error"] and SECRET not in r["error"]
    # 401 is not retried; the others 1 + llm.http.max_retries times, and not again through llm.retries
    assert srv.asked[f"{SECRET} toy 2"] == 1 and srv.asked[f"{SECRET} toy 1"] == 3


def test_one_bad_row_fails_alone_under_the_share(ray_session, tmp_path):
    counts, err, out, _ = generate(tmp_path, "ok", 4, fail_users={"toy 2"})
    assert err is None and counts.ok == 3 and counts.failed == 1
    assert out["item:2"]["status"] == "failed" and "HTTP 500" in out["item:2"]["error"]


def test_a_failed_stage_is_not_complete_and_its_rerun_asks_only_the_failed_rows(ray_session, tmp_path):
    cfg = load_config(sets=["llm.engine=http", "llm.http.max_retries=0", "llm.retries=0", "llm.batch_size=4",
                            "llm.shard_rows=4", "llm.http.retry_wait_s=0.05"])
    run = RunDir(str(tmp_path))
    template = prompts.load("item_profile", "products")
    table = rows(4)

    def stage(srv):
        c = cfg.model_copy(update={"llm": cfg.llm.model_copy(update={
            "http": cfg.llm.http.model_copy(update={"url": srv.url})})})
        return generation_stage(context(c, run), "profiles/items", table, template, ("item_idx",), {}, {"x": "1"},
                                {})

    with FakeOpenAI("ok", fail_users={"toy 1", "toy 2"}) as srv:
        with pytest.raises(FailureShareExceeded, match=r"2 of 4 rows failed \(50% > llm.max_failure_share 20%\)"):
            stage(srv)
    assert manifest.load(run, "profiles/items") is None  # not complete
    with FakeOpenAI("ok") as srv:  # the endpoint recovered, at another address
        counts = stage(srv)
        assert sorted(srv.asked) == [f"{SECRET} toy 1", f"{SECRET} toy 2"]
    assert counts["status"] == {"ok": 4} and manifest.load(run, "profiles/items") is not None


def test_cut_off_answer_is_retried_then_kept_as_truncated(ray_session, tmp_path):
    counts, err, out, srv = generate(tmp_path, {"toy 0": "cut_then_ok", "toy 1": "cut_off"}, 2)
    assert err is None and counts.ok == 1 and counts.truncated == 1 and counts.repaired == 0
    assert counts.retried == 2 and out["item:0"]["status"] == "ok" and out["item:0"]["attempts"] == 2
    r = out["item:1"]
    assert r["status"] == "truncated" and r["attempts"] == 2 and r["summarization"] == "A fine it"
    assert r["raw"].startswith('{"summarization"') and "cut off" in r["error"]


def test_truncated_status_from_the_repair_or_the_finish_reason():
    assert validate("item_profile", '{"summarization": "A fine it').status == "truncated"
    assert validate("item_profile", '{"summarization": "A fine item", "reasoning": "b"').status == "truncated"
    assert validate("item_profile", '```json\n{"summarization": "A fine item",}\n```').status == "repaired"
    assert validate("item_profile", '{"summarization": "A fine item",}', cut_off=True).status == "truncated"
    assert validate("item_profile", '{"summarization": "A fine item"}', cut_off=True).status == "ok"


def test_backoff_has_jitter_and_retry_after_reads_seconds_and_dates():
    rng = random.Random(0)
    waits = [backoff_s(a, 1.0, 60.0, rng) for a in range(8)]
    assert all(0.5 * min(60, 2 ** a) <= w <= min(60, 2 ** a) for a, w in enumerate(waits))
    assert len({round(backoff_s(2, 1.0, 60.0, rng), 6) for _ in range(5)}) > 1
    assert retry_after_s("3") == 3.0 and retry_after_s(None) is None and retry_after_s("soon") is None
    assert 9 <= retry_after_s("Wed, 02 Dec 2026 00:00:10 GMT", now=1796169600.0) <= 11


def test_answers_keep_their_fingerprint_when_only_the_endpoint_changes():
    a = load_config(sets=["llm.engine=http", "llm.http.url=http://a:1/v1/chat/completions"])
    b = load_config(sets=["llm.engine=http", "llm.http.url=http://b:2/v1/chat/completions", "llm.http.qps=3",
                          "llm.http.concurrency=4", "llm.http.timeout_s=5", "llm.concurrency=2"])
    assert llm_identity(a) == llm_identity(b)
    c = load_config(sets=["llm.engine=http", "llm.http.model=other"])
    assert llm_identity(a) != llm_identity(c)


def test_session_never_raises_and_never_echoes_the_request():
    from hnl_ray.llm.engines.http_session import ResilientSession

    async def go():
        async with ResilientSession(timeout_s=0.5, max_retries=1, retry_wait_s=0.01) as s:
            reply = await s.post("http://127.0.0.1:9/v1/chat/completions", headers={}, data=SECRET)
            async with reply as r:
                return r.status, await r.json()

    status, body = asyncio.run(go())
    assert status == 200 and "connection error" in body["error"]["message"] and SECRET not in str(body)


KILL_DRIVER = r"""
import sys
import pyarrow as pa
from hnl_ray.config import load_config
from hnl_ray.llm.engines.base import build_engine
from hnl_ray.llm.generate import run_generation
from hnl_ray.storage import RunDir
import ray
ray.init(num_cpus=2, include_dashboard=False)
cfg = load_config(sets=["llm.engine=http", "llm.http.url=" + sys.argv[2], "llm.batch_size=4",
                        "llm.shard_rows=4", "llm.retries=0"]).llm
rows = pa.Table.from_pylist([{"id": f"item:{k}", "item_idx": k, "kind": "item_profile", "system": "JSON please.",
                              "user": f"toy {k}"} for k in range(200)])
run_generation(RunDir(sys.argv[1]), "gen", rows, build_engine(cfg), cfg, seed=0, key_columns=("item_idx",))
"""


@pytest.mark.slow
def test_a_kill_loses_at_most_the_blocks_in_flight(tmp_path):
    """SIGKILL of the driver (and its local Ray) mid-stage: of the answers the endpoint had sent in full, all are
    on disk but the blocks still in the pipeline (the HTTP stage's, and those between it and the driver: blocks of
    min(batch_size, shard_rows) = 4 rows here, one HTTP worker). The kill lands once 80 answers are back, in the
    stage's steady state. Seen with the kill at 60 answers: 2-5 blocks lost on a quiet machine (6 runs), 2 beside
    a fine-tuning job (3 runs); at 30 answers, early in the stage, 5 once on CI. The bound asserted is 8 blocks
    (32 answers, under half of those back): before the fix the driver wrote only when Ray Data delivered a whole
    128 MiB block, and a kill lost 32 of 64 answers (issue 16)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    with FakeOpenAI("ok", delay_s=0.15) as srv:  # ~6 answers/s: the kill lands mid-stage
        env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
        proc = subprocess.Popen([sys.executable, "-c", KILL_DRIVER, str(tmp_path), srv.url], env=env,
                                start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 240
        while time.time() < deadline and sum(srv.answered.values()) < 80:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            time.sleep(0.05)
        with srv.lock:  # freeze the count at the kill: later replies cannot reach a dead driver's writer
            os.killpg(proc.pid, signal.SIGKILL)
            answered = set(srv.answered)
        proc.wait()
        written = set(r["id"] for r in (read_shards(RunDir(str(tmp_path)), "gen") or pa.table({"id": []})).to_pylist())
        answered_ids = {f"item:{u.rsplit(' ', 1)[1]}" for u in answered}
        lost = answered_ids - written
        assert len(answered_ids) >= 80 and written <= answered_ids
        assert len(lost) <= 8 * 4, f"{len(lost)} answers that came back were lost (blocks of 4): {sorted(lost)}"
        print(f"answered {len(answered_ids)}, written {len(written)}, lost {len(lost)}")
