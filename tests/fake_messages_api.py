"""A fake Messages API on 127.0.0.1 (an ephemeral port), driven through the real SDK.

``FakeMessagesAPI(responder)`` serves ``POST /v1/messages``: the responder gets the
request's JSON body and the number of requests so far and returns a :class:`Reply`
(an answer, an HTTP error such as 529 overloaded or 401, a malformed answer sent as is,
and an optional delay before it). Helpers build answers against the fake genome of
``conftest.py``, and the malformed answers a proxy or a broken API can send.
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
    body: str | None = None  # sent as is instead of a message (a malformed answer)
    content_type: str = "application/json"
    content: list[dict[str, Any]] | None = None  # the message's content blocks (default: one text block)


def overloaded(retry_after_ms: int = 20) -> Reply:
    return Reply(status=529, headers={"retry-after-ms": str(retry_after_ms)})


def _error_body(status: int) -> dict[str, Any]:
    kinds = {429: "rate_limit_error", 500: "api_error", 529: "overloaded_error", 400: "invalid_request_error",
             401: "authentication_error", 403: "permission_error", 404: "not_found_error"}
    kind = kinds.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": f"fake {kind}"}}


def unknown_model(request: dict[str, Any], n: int) -> Reply:
    """The API's answer to a model name it does not serve: 404 not_found_error naming it."""
    body = {"type": "error", "error": {"type": "not_found_error", "message": f"model: {request.get('model')}"}}
    return Reply(status=404, body=json.dumps(body))


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
                if reply.body is not None:
                    data = reply.body.encode()
                elif reply.status == 200:
                    content = reply.content if reply.content is not None else [{"type": "text", "text": reply.text}]
                    data = json.dumps({
                        "id": f"msg_{n}", "type": "message", "role": "assistant", "model": body.get("model", "?"),
                        "content": content, "stop_reason": reply.stop_reason, "stop_sequence": None,
                        "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
                    }).encode()
                else:
                    data = json.dumps(_error_body(reply.status)).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", reply.content_type)
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


# ---------------------------------------------------------------------------- malformed answers

HTML_PAGE = "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>\n"

# kind -> (a 200 answer that is not a usable message, the outcome recorded, words of the error)
MALFORMED: dict[str, tuple[Reply, str, str]] = {
    "html page": (Reply(body=HTML_PAGE, content_type="text/html"), "bad_response", "not JSON (text/html)"),
    "not json": (Reply(body='{"id": "msg_1", "content": [', content_type="application/json"), "bad_response",
                 "not JSON (application/json)"),
    "empty object": (Reply(body="{}"), "bad_response", "not a message (no valid content or usage)"),
    "no usage": (Reply(body=json.dumps({"type": "message", "content": [{"type": "text", "text": "hi"}]})),
                 "bad_response", "no valid usage"),
    "error object": (Reply(body=json.dumps({"type": "error", "error": {"type": "overloaded_error",
                                                                      "message": "Overloaded"}})),
                     "bad_response", "error object instead of a message (overloaded_error: Overloaded)"),
    "empty content": (Reply(content=[]), "empty_answer", "the answer has no text"),
    "empty body": (Reply(body=""), "bad_response", "not JSON"),
}
