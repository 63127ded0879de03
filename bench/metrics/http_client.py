"""POST to an HTTP API with retries: the one client of editbench's remote calls (the judges'
endpoint, ``bench.metrics.judge_backends``; the ``openai_images`` method).

A request is sent up to 1 + ``retries`` times. After a transient error (a connection error, a
timeout, HTTP 408/409/429/5xx) it waits ``backoff_s * 2**attempt`` seconds, or longer when the
server's ``Retry-After`` header asks for longer (in seconds, at most ``MAX_RETRY_AFTER_S``), and
tries again. It ends with the reply's body, or an ``HttpFailure`` saying what happened: the
status code and the server's own message, or the connection error, and the tries made. The
request's headers (an API key) never go into a failure.
"""

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

TRANSIENT_HTTP = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_MESSAGE = 300  # characters of a server's message a failure keeps
MAX_RETRY_AFTER_S = 120.0  # the longest wait a Retry-After header gets


@dataclass(frozen=True)
class RetryPolicy:
    """How long one try may take (``timeout_s``), how many more tries follow a transient error
    (``retries``) and the first wait between them (``backoff_s``, doubling)."""

    timeout_s: float
    retries: int
    backoff_s: float


class HttpFailure(Exception):
    """A request that ended without a reply: ``status`` (None when the server never answered),
    the server's message or the connection error (``message``), ``timed_out`` and ``tries``."""

    def __init__(self, status: int | None, message: str, tries: int, timed_out: bool = False):
        self.status, self.message, self.tries, self.timed_out = status, message, tries, timed_out
        what = f"HTTP {status}" if status is not None else ("timed out" if timed_out else "no answer")
        super().__init__(f"{what} after {tries} {'try' if tries == 1 else 'tries'}: {message}")


def post(url: str, body: bytes, headers: dict, policy: RetryPolicy,
         final: Callable[[int, str], bool] = lambda status, message: False) -> bytes:  # fmt: skip
    """The body of the reply to ``POST url``, retried by ``policy`` (module doc); ``final(status,
    message)`` True stops at an error reply that would otherwise be retried."""
    for attempt in range(policy.retries + 1):
        last = attempt == policy.retries
        wait = policy.backoff_s * 2**attempt
        request = urllib.request.Request(url, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=policy.timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            message = server_message(exc.read())
            if exc.code not in TRANSIENT_HTTP or last or final(exc.code, message):
                raise HttpFailure(exc.code, message, attempt + 1) from None
            wait = max(wait, retry_after(exc.headers.get("Retry-After")))
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            if last:
                raise HttpFailure(None, str(reason), attempt + 1, timed_out=isinstance(reason, TimeoutError)) from None
        time.sleep(wait)
    raise AssertionError("unreachable: the last try returns or raises")


def get_status(url: str, headers: dict, timeout_s: float) -> int:
    """The HTTP status a ``GET url`` answers with (any status: a server is there); an
    ``HttpFailure`` without a status when nothing answers (the check before any work)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError) as exc:
        raise HttpFailure(None, str(getattr(exc, "reason", exc)), 1, timed_out=isinstance(exc, TimeoutError)) from None


def retry_after(value: str | None) -> float:
    """The seconds a ``Retry-After`` header asks to wait (0 when absent or an HTTP date, which
    the backoff then covers), at most ``MAX_RETRY_AFTER_S``."""
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except (TypeError, ValueError):
        return 0.0


def server_message(raw: bytes) -> str:
    """What a server said in an error body: its ``error.message`` (with code/type), or the body's start."""
    try:
        error = json.loads(raw).get("error")
    except (ValueError, AttributeError):
        return repr(raw[:MAX_MESSAGE])
    if isinstance(error, dict):
        labels = [str(error[k]) for k in ("code", "type") if error.get(k)]
        return (f"[{', '.join(labels)}] " if labels else "") + str(error.get("message", error))[:MAX_MESSAGE]
    return str(error)[:MAX_MESSAGE] if error else repr(raw[:MAX_MESSAGE])
