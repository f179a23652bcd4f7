"""The `http` engine: any OpenAI-compatible chat-completions endpoint through Ray's HTTP request processor
(`ray.data.llm.HttpRequestProcessorConfig` + `build_processor`), with a qps limit, retries with exponential
backoff, and an API key read from the environment variable that `llm.http.api_key_env` names."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

from ...config.llm import LLMConfig
from ..schemas import json_schema
from .base import Engine, EngineError


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


def answer(response) -> tuple[str | None, str | None, int]:
    """(text, error, generated tokens) from a chat-completions response (or an error body)."""
    if isinstance(response, str):
        try:
            response = json.loads(response)
        except ValueError:
            return None, f"not JSON: {response[:200]}", 0
    if not isinstance(response, dict):
        return None, f"unexpected response: {str(response)[:200]}", 0
    try:
        text = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        err = response.get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        return None, f"no choices in the response: {msg or str(response)[:200]}", 0
    usage = response.get("usage") or {}
    return text, None, int(usage.get("completion_tokens") or 0)


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
                urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5)
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
        config = HttpRequestProcessorConfig(url=c.http.url, headers=headers(c), qps=c.http.qps,
                                            max_retries=c.http.max_retries,
                                            base_retry_wait_time_in_s=c.http.retry_wait_s,
                                            concurrency=c.http.concurrency, batch_size=c.batch_size)

        def pre(row: dict) -> dict:
            return {**row, "payload": payload(row, c)}

        def post(row: dict) -> dict:
            text, err, n = answer(row.get("http_response"))
            keep = {k: v for k, v in row.items() if k not in ("payload", "http_response")}
            return {**keep, "text": text, "error": err, "gen_tokens": n, "prompt_tokens": 0, "truncated": False}

        return build_processor(config, preprocess=pre, postprocess=post)(ds)

    def describe(self) -> dict:
        c = self.cfg
        return {"engine": "http", "url": c.http.url, "model": c.http.model or c.model,
                "max_new_tokens": c.max_new_tokens, "temperature": c.temperature, "structured": c.structured}
