"""A small OpenAI-compatible chat-completions server over the `hf` generator.

It lets the `http` engine be exercised end to end on a laptop (the tests start it on 127.0.0.1), and serves a
local model to any OpenAI client: `hnl-ray serve-llm --port 8000`. Supported: POST /v1/chat/completions with
`messages` (system + user), `max_tokens`, `temperature`, `seed`, and `response_format` of type `json_schema`
(decoding is then constrained to that schema); GET /v1/models. Requests are served one at a time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from .engines.hf import HFGenerator

log = logging.getLogger(__name__)


class ChatServer:
    def __init__(self, model_path: str, host: str = "127.0.0.1", port: int = 8000, max_new_tokens: int = 96,
                 threads: int | None = None):
        self.model_path = model_path
        self.gen = HFGenerator(model_path, max_new_tokens=max_new_tokens, max_prompt_tokens=2048, top_p=1.0,
                               structured=True, schemas={}, threads=threads, device="auto", dtype="auto",
                               repetition_penalty=1.15)
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):  # quiet
                log.debug(fmt, *args)

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_HEAD(self):  # noqa: N802
                self.send_response(200)
                self.end_headers()

            def do_GET(self):  # noqa: N802
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": server.model_path, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):  # noqa: N802
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                try:
                    req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                    self._send(200, server.complete(req))
                except (ValueError, KeyError, TypeError) as exc:
                    self._send(400, {"error": {"message": f"bad request: {exc}"}})

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.port = self.httpd.server_address[1]

    def complete(self, req: dict) -> dict:
        msgs = req["messages"]
        system = next((m["content"] for m in msgs if m["role"] == "system"), "")
        user = "\n".join(m["content"] for m in msgs if m["role"] == "user")
        kind = "answer"
        fmt = req.get("response_format") or {}
        schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None
        with self.lock:
            if schema is not None:
                kind = (fmt.get("json_schema") or {}).get("name", "answer")
                self.gen.schemas[kind] = json.dumps(schema)
                self.gen._grammars.pop(kind, None)
            self.gen.structured = schema is not None
            self.gen.max_new_tokens = int(req.get("max_tokens") or self.gen.max_new_tokens)
            batch = {"id": np.array(["r"]), "kind": np.array([kind]), "system": np.array([system]),
                     "user": np.array([user]), "temperature": np.array([float(req.get("temperature") or 0.0)]),
                     "seed": np.array([int(req.get("seed") or 0)])}
            out = self.gen(batch)
        if out["error"][0]:
            raise ValueError(out["error"][0])
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
                "model": req.get("model", self.model_path),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": out["text"][0]}}],
                "usage": {"prompt_tokens": int(out["prompt_tokens"][0]), "completion_tokens": int(out["gen_tokens"][0]),
                          "total_tokens": int(out["prompt_tokens"][0] + out["gen_tokens"][0])}}

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def start(self) -> "ChatServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
