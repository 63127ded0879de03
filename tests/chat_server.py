"""A minimal OpenAI-compatible chat server for the judge tests, on a 127.0.0.1 port.

``GET /v1/models`` lists one model; ``POST /v1/chat/completions`` decodes the request's PNG
data-URL images and text and answers with ``respond(images, text, body)``: in the tests, the
tiny Qwen2.5-VL through the local backend, or a rule that gives readable scores; ``respond``
may also return a ``Reply`` (any status and body, after a delay: refusals, content filters,
broken bodies, timeouts). It records every request, the most requests it had in flight at
once, and can fail the first ``fail_first`` chat requests with HTTP 503 (a transient error the
client must retry). A GET of a path in ``files`` answers with its bytes. Subclasses parse and
answer other requests (``parse``, ``answer``: ``tests/images_server.py``).
"""

import base64
import io
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


@dataclass
class Reply:
    """A reply other than a plain answer: ``body`` (a JSON payload, or raw bytes) with ``status``
    and extra ``headers`` (e.g. Retry-After), sent after ``delay_s`` seconds."""

    body: dict | bytes
    status: int = 200
    delay_s: float = 0.0
    headers: dict = field(default_factory=dict)


def completion(content: str | None, finish_reason: str = "stop", **message) -> dict:
    """A ``/chat/completions`` reply body with one choice."""
    return {"object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": content, **message}, "finish_reason": finish_reason}]}


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the listen backlog: many clients connect at once (benchmarks/judge_throughput.py)


class ChatServer:
    def __init__(self, respond, model: str = "tiny-judge", fail_first: int = 0, delay_s: float = 0.0):
        self.respond, self.model, self.fail_first, self.delay_s = respond, model, fail_first, delay_s
        self.requests: list[dict] = []
        self.files: dict[str, bytes] = {}  # path -> bytes a GET of that path answers with
        self.headers: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _reply(self, code: int, payload: dict | bytes, headers: dict = {}):  # noqa: B006 (read only)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
                    pass

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    self._reply(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
                elif self.path in server.files:
                    self._reply(200, server.files[self.path])
                else:
                    self._reply(404, {"error": "not found"})

            def do_POST(self):
                body = server.parse(self.rfile.read(int(self.headers["Content-Length"])), self.headers)
                with server._lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    failing = len(server.requests) <= server.fail_first
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay_s)
                    if failing:
                        return self._reply(503, {"error": "busy"})
                    answer = server.answer(body)
                    time.sleep(answer.delay_s)
                    self._reply(answer.status, answer.body, answer.headers)
                finally:
                    with server._lock:
                        server.in_flight -= 1

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def parse(self, raw: bytes, headers) -> dict:
        """The request as the server records it (a chat request's JSON)."""
        return json.loads(raw)

    def answer(self, body: dict) -> Reply:
        """The reply to a parsed request: ``respond``'s answer as a chat completion, or its ``Reply``."""
        images, text = decode(body)
        answer = self.respond(images, text, body)
        return answer if isinstance(answer, Reply) else Reply({**completion(answer), "model": self.model})

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def decode(body: dict) -> tuple[list[Image.Image], str]:
    """The images (in order) and the text of a chat request's user message (after any system message)."""
    images, texts = [], []
    for part in body["messages"][-1]["content"]:
        if part["type"] == "image_url":
            data = part["image_url"]["url"].split(",", 1)[1]
            images.append(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
        else:
            texts.append(part["text"])
    return images, "".join(texts)
