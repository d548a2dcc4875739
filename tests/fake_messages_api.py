"""A fake Messages API on 127.0.0.1 (an ephemeral port), driven through the real SDK.

``FakeMessagesAPI(responder)`` serves ``POST /v1/messages``: the responder gets the
request's JSON body and the number of requests so far and returns a :class:`Reply`
(an answer, an HTTP error such as 529 overloaded, and an optional delay before it).
Helpers build answers against the fake genome of ``conftest.py``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """What the fake server answers to one request."""

    text: str = ""
    status: int = 200
    delay_s: float = 0.0
    stop_reason: str = "end_turn"
    input_tokens: int = 1000
    output_tokens: int = 100
    headers: dict[str, str] = field(default_factory=dict)


def overloaded(retry_after_ms: int = 20) -> Reply:
    return Reply(status=529, headers={"retry-after-ms": str(retry_after_ms)})


def _error_body(status: int) -> dict[str, Any]:
    kinds = {429: "rate_limit_error", 500: "api_error", 529: "overloaded_error", 400: "invalid_request_error"}
    kind = kinds.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": f"fake {kind}"}}


class FakeMessagesAPI:
    """A threaded HTTP server answering the Messages API from a responder function.

    Attributes:
        requests: the JSON bodies received, in order.
        url: the base URL to give the SDK.
    """

    def __init__(self, responder: Callable[[dict[str, Any], int], Reply]) -> None:
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                with api._lock:
                    api.requests.append(body)
                    n = len(api.requests)
                reply = api.responder(body, n)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.status == 200:
                    payload = {
                        "id": f"msg_{n}", "type": "message", "role": "assistant", "model": body.get("model", "?"),
                        "content": [{"type": "text", "text": reply.text}], "stop_reason": reply.stop_reason,
                        "stop_sequence": None,
                        "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
                    }
                else:
                    payload = _error_body(reply.status)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeMessagesAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


# ---------------------------------------------------------------------------- answers

def parent_source(request: dict[str, Any]) -> str:
    """The parent genome's source, as shown in the first user message."""
    first = request["messages"][0]["content"]
    section = first[first.index("## The parent genome"):]
    return re.search(r"```python\n(.*?)\n```", section, re.S).group(1) + "\n"


def lr_edit(code: str, factor: float, description: str | None = None) -> str:
    """An answer that multiplies the fake genome's LR by ``factor`` (one SEARCH/REPLACE block)."""
    line = next(line for line in code.splitlines() if line.startswith("LR = "))
    value = float(line.split("=")[1].split("#")[0])
    new = f"LR = {value * factor:.6g}  # learning rate"
    description = description or f"LR {value:g} -> {value * factor:.6g}"
    return f"DESCRIPTION: {description}\n<<<<<<< SEARCH\n{line}\n=======\n{new}\n>>>>>>> REPLACE\n"


def bad_edit() -> str:
    """An answer whose SEARCH text is nowhere in the fake genome."""
    return (
        "DESCRIPTION: raise the learning rate\n<<<<<<< SEARCH\nLEARNING_RATE = 0.04  # learning rate\n"
        "=======\nLEARNING_RATE = 0.05  # learning rate\n>>>>>>> REPLACE\n"
    )


def smart(n_factor: Callable[[int], float] = lambda n: 0.5 + 0.07 * n) -> Callable[[dict[str, Any], int], Reply]:
    """A responder that always answers with a valid, new LR edit of whatever parent it is shown."""
    return lambda request, n: Reply(lr_edit(parent_source(request), n_factor(n)))
