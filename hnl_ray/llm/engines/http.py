"""The `http` engine: any OpenAI-compatible chat-completions endpoint through Ray's HTTP request processor
(`ray.data.llm.HttpRequestProcessorConfig` + `build_processor`), with a qps limit, an API key read from the
environment variable that `llm.http.api_key_env` names, and requests sent through `http_session.ResilientSession`
(per-request timeout, backoff with jitter, `Retry-After`; a request that keeps failing fails its row only)."""

from __future__ import annotations

import functools
import json
import os
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

from ...config.llm import LLMConfig
from ..schemas import json_schema
from .base import Engine, EngineError
from .http_session import FAILED_TYPE, ResilientSession


def headers(cfg: LLMConfig) -> dict[str, str]:
    h = {}
    var = cfg.http.api_key_env
    if var:
        key = os.environ.get(var)
        if not key:
            raise EngineError(f"llm.http.api_key_env names {var}, but that environment variable is not set")
        h["Authorization"] = f"Bearer {key}"
    return h


def payload(row: dict, cfg: LLMConfig) -> dict:
    """The chat-completions request for one prompt row."""
    body = {
        "model": cfg.http.model or cfg.model or "default",
        "messages": [{"role": "system", "content": row["system"]}, {"role": "user", "content": row["user"]}],
        "max_tokens": cfg.max_new_tokens,
        "temperature": float(row["temperature"]),
        "top_p": cfg.top_p,
        "seed": int(row["seed"]),
    }
    if cfg.structured and cfg.http.json_schema:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": row["kind"], "schema": json_schema(row["kind"])}}
    return body


def answer(response) -> tuple[str | None, str | None, int, str | None]:
    """(text, error, generated tokens, finish_reason) from a chat-completions response (or an error body)."""
    if isinstance(response, str):
        try:
            response = json.loads(response)
        except ValueError:
            return None, f"not JSON: {response[:200]}", 0, None
    if not isinstance(response, dict):
        return None, f"unexpected response: {str(response)[:200]}", 0, None
    try:
        choice = response["choices"][0]
        text = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        err = response.get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        if isinstance(err, dict) and err.get("type") == FAILED_TYPE:
            return None, f"request failed: {msg}", 0, None
        return None, f"no choices in the response: {msg or str(response)[:200]}", 0, None
    if text is not None and not isinstance(text, str):
        return None, f"message content is not text ({type(text).__name__})", 0, None
    usage = response.get("usage") or {}
    try:
        n = int(usage.get("completion_tokens") or 0)
    except (TypeError, ValueError):
        n = 0
    finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    return text, None, n, finish if isinstance(finish, str) else None


class HTTPEngine(Engine):
    name = "http"

    def __init__(self, cfg: LLMConfig):
        self.cfg = cfg

    def check(self) -> None:
        """Reach the server before starting the pipeline, retrying with backoff like the requests will."""
        headers(self.cfg)  # fails fast on a missing API key variable
        url = self.cfg.http.url
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise EngineError(f"llm.http.url: {url!r} is not an http(s) URL")
        last = None
        for attempt in range(self.cfg.http.max_retries + 1):
            try:
                urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                                       timeout=min(5.0, self.cfg.http.timeout_s))
                return
            except urllib.error.HTTPError:
                return  # the server answered (405 for HEAD is fine)
            except (urllib.error.URLError, OSError) as exc:
                last = exc
                if attempt < self.cfg.http.max_retries:
                    time.sleep(self.cfg.http.retry_wait_s * 2 ** attempt)
        raise EngineError(f"the HTTP endpoint {url} is unreachable after {self.cfg.http.max_retries} retries: "
                          f"{getattr(last, 'reason', last)}")

    def generate(self, ds):
        from ray.data.llm import HttpRequestProcessorConfig, build_processor

        c = self.cfg
        # Ray's own retries are off: ResilientSession retries each request (see http_session for why).
        session = functools.partial(ResilientSession, timeout_s=c.http.timeout_s, max_retries=c.http.max_retries,
                                    retry_wait_s=c.http.retry_wait_s, max_wait_s=c.http.max_wait_s)
        config = HttpRequestProcessorConfig(url=c.http.url, headers=headers(c), qps=c.http.qps, max_retries=0,
                                            session_factory=session,
                                            concurrency=c.http.concurrency,
                                            batch_size=min(c.batch_size, c.shard_rows))

        def pre(row: dict) -> dict:
            return {**row, "payload": payload(row, c)}

        def post(row: dict) -> dict:
            text, err, n, finish = answer(row.get("http_response"))
            keep = {k: v for k, v in row.items() if k not in ("payload", "http_response")}
            return {**keep, "text": text, "error": err, "gen_tokens": n, "prompt_tokens": 0, "truncated": False,
                    "finish_reason": finish}

        return build_processor(config, preprocess=pre, postprocess=post)(ds)

    def block_rows(self, cfg) -> int:
        # Ray's HTTP stage returns a batch's answers together, once its slowest request is back; batches of at
        # most a shard keep what a crash loses near one shard (README: resume granularity).
        return min(cfg.batch_size, cfg.shard_rows)

    def describe(self) -> dict:
        c = self.cfg
        return {"engine": "http", "url": c.http.url, "model": c.http.model or c.model,
                "max_new_tokens": c.max_new_tokens, "temperature": c.temperature, "structured": c.structured}
