"""The HTTP client behind the `http` engine: what Ray's HTTP request stage (`ray.data.llm`) sends its requests
through, given to it as `session_factory`.

Ray 2.60's stage (ray/llm/_internal/batch/stages/http_request_stage.py) retries only 408/429/502/503/504 and
connection errors, ignores `Retry-After`, has no request timeout of its own (aiohttp's 5-minute default), raises on
a non-JSON body, and after its last retry raises `RuntimeError("Reached maximum retries ... for input row
{payload}")`: the whole stage aborts for one row, with every prompt of the row in the message. So Ray is told to
make no retries and this session does them per request:

* a timeout per request (`llm.http.timeout_s`);
* retries on 408/409/425/429/5xx, timeouts, connection errors and bodies that are not JSON (an HTML error page from
  a proxy, a truncated body), with exponential backoff and jitter (`retry_wait_s` * 2^attempt, times 0.5-1, at
  most `max_wait_s`), waiting at least what `Retry-After` asks;
* other 4xx answers (a bad key, an unknown model) are not retried;
* after the last retry the row gets an `{"error": ...}` body naming the reason: it fails alone, the stage goes on.

Messages name the status, the exception and at most the start of the *response*; never the request (prompts).
Requests of one batch are sent concurrently (Ray creates them in order, paced by `qps`, then awaits them).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from typing import Any

RETRY_STATUS = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))
FAILED_TYPE = "hnl_ray_request_failed"


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds a `Retry-After` header asks for (delta-seconds or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_s(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: base * 2^attempt, scaled by a random factor in [0.5, 1], capped."""
    return min(max_s, base_s * 2 ** attempt) * (0.5 + 0.5 * rng.random())


class _Reply:
    """The part of an aiohttp response that Ray's stage reads: status, reason, json()."""

    status, reason = 200, "OK"

    def __init__(self, body: dict):
        self._body = body

    async def __aenter__(self) -> "_Reply":
        return self

    async def __aexit__(self, *exc: Any) -> bool:
        return False

    async def json(self, **_: Any) -> dict:
        return self._body


def failure(reason: str) -> dict:
    return {"error": {"message": reason, "type": FAILED_TYPE}}


class ResilientSession:
    """A stand-in for `aiohttp.ClientSession` (async context manager with `post`) that retries as described above
    and always answers with a JSON object."""

    def __init__(self, timeout_s: float, max_retries: int, retry_wait_s: float, max_wait_s: float = 60.0,
                 seed: int | None = None):
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.retry_wait_s, self.max_wait_s = retry_wait_s, max_wait_s
        self.rng = random.Random(seed)
        self._session = None

    async def __aenter__(self) -> "ResilientSession":
        import aiohttp

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self

    async def __aexit__(self, *exc: Any) -> bool:
        if self._session is not None:
            await self._session.close()
        return False

    def post(self, url: str, headers: dict | None = None, data: Any = None, **_: Any) -> "asyncio.Future[_Reply]":
        return asyncio.ensure_future(self._send(url, headers, data))

    async def _send(self, url: str, headers: dict | None, data: Any) -> _Reply:
        import aiohttp

        reason = "no attempt made"
        for attempt in range(self.max_retries + 1):
            wait = backoff_s(attempt, self.retry_wait_s, self.max_wait_s, self.rng)
            try:
                async with self._session.post(url, headers=headers, data=data) as r:
                    body = await r.read()
                    if r.status in RETRY_STATUS:
                        reason = f"HTTP {r.status} {r.reason or ''}".strip()
                        asked = retry_after_s(r.headers.get("Retry-After"))
                        if asked is not None:
                            wait = max(wait, min(asked, self.max_wait_s))
                            reason += f" (Retry-After: {r.headers.get('Retry-After')})"
                    elif r.status >= 400:
                        return _Reply(failure(f"HTTP {r.status} {r.reason or ''}: {_peek(body)} (not retried)"))
                    else:
                        try:
                            obj = json.loads(body)
                        except ValueError:
                            kind = r.headers.get("Content-Type", "no content type")
                            reason = f"the answer is not JSON ({kind}, {len(body)} bytes: {_peek(body)})"
                        else:
                            if isinstance(obj, dict) and obj:
                                return _Reply(obj)
                            reason = f"the answer is JSON but not a non-empty object ({_peek(body)})"
            except asyncio.TimeoutError:
                reason = f"no answer within llm.http.timeout_s = {self.timeout_s:g} s"
            except aiohttp.ClientError as exc:
                reason = f"connection error: {type(exc).__name__}: {str(exc)[:160]}"
            if attempt < self.max_retries:
                await asyncio.sleep(wait)
        return _Reply(failure(f"{reason}; gave up after {self.max_retries} retries (llm.http.max_retries)"))


def _peek(body: bytes, n: int = 80) -> str:
    text = body[:n].decode("utf-8", "replace")
    return " ".join(text.split()) + ("..." if len(body) > n else "")
