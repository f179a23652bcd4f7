"""A misbehaving OpenAI-compatible chat-completions server on 127.0.0.1 for tests: each request is answered by a
`mode` function of (the request's user message, how many times that message was asked before), which returns
(status, headers, body bytes, seconds to wait first)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GOOD = '{"summarization": "A fine item for kids", "reasoning": "it is a toy"}'
CUT = '{"summarization": "A fine it'


def completion(content: str, finish: str = "stop") -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": finish}],
                       "usage": {"completion_tokens": 7}}).encode()


def ok(_user, _n):
    return 200, {}, completion(GOOD), 0


MODES = {
    "ok": ok,
    # 429 with Retry-After on the first ask of each row, then an answer
    "429": lambda u, n: (429, {"Retry-After": "1"}, b'{"error": "slow down"}', 0) if n == 0 else ok(u, n),
    "500_then_ok": lambda u, n: (500, {}, b"oops", 0) if n == 0 else ok(u, n),
    "html": lambda u, n: (200, {"Content-Type": "text/html"}, b"<html><body>Bad gateway</body></html>", 0),
    "hang_then_ok": lambda u, n: (200, {}, completion(GOOD), 15) if n == 0 else ok(u, n),
    "truncated_body": lambda u, n: (200, {}, completion(GOOD)[:25], 0) if n == 0 else ok(u, n),
    "cut_off": lambda u, n: (200, {}, completion(CUT, "length"), 0),
    "cut_then_ok": lambda u, n: (200, {}, completion(CUT, "length"), 0) if n == 0 else ok(u, n),
    "all_fail": lambda u, n: (500, {}, b"internal error", 0),
    "bad_key": lambda u, n: (401, {}, b'{"error": {"message": "invalid api key"}}', 0),
}


class FakeOpenAI:
    """`mode`: one of MODES for every request, or {text in the user message: mode} (others: ok), so that one
    Ray pipeline exercises several behaviours at once."""

    def __init__(self, mode: str | dict[str, str] = "ok", fail_users: set[str] | None = None,
                 delay_s: float = 0.0):
        by_text = {k: MODES[v] for k, v in mode.items()} if isinstance(mode, dict) else {}
        default = ok if isinstance(mode, dict) else MODES[mode]

        def pick(user, n):
            fn = next((f for text, f in by_text.items() if user.endswith(text)), default)
            return fn(user, n)

        self.mode = pick
        self.asked: Counter[str] = Counter()
        self.received: list[dict] = []
        self.answered: Counter[str] = Counter()  # user messages whose 200 reply was sent in full
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.send_response(405)
                self.end_headers()

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                user = body["messages"][-1]["content"]
                with fake.lock:
                    n = fake.asked[user]
                    fake.asked[user] += 1
                    fake.received.append(body)
                status, headers, data, delay = fake.mode(user, n)
                if fail_users and any(f in user for f in fail_users):
                    status, headers, data, delay = 500, {}, b"down", 0
                if delay or delay_s:
                    fake.stop_event.wait(delay or delay_s)
                try:
                    self.send_response(status)
                    headers = {"Content-Type": "application/json", **headers}
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    if status == 200:
                        with fake.lock:
                            fake.answered[user] += 1
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1/chat/completions"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()


def wait_for(pred, timeout: float = 30.0) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.05)
    return False

