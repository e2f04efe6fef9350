"""The one error hierarchy of edge360: every refusal is an Edge360Error carrying its HTTP status.

Pure code raises these; http.dispatch is the single place where one becomes a response, and the
command line turns a ConfigError or UsageError into one line on stderr and exit status 2.
"""

from __future__ import annotations


class Edge360Error(Exception):
    """Base of every error edge360 raises on purpose. `status` is the HTTP answer it maps to."""

    status: int = 500
    #: extra response headers (e.g. Retry-After, Content-Range for 416)
    headers: dict[str, str]

    def __init__(self, message: str = "", *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message or self.__class__.__name__)
        self.headers = dict(headers or {})

    @property
    def public_message(self) -> str:
        """What a client may see: the reason phrase class, never internal detail."""
        return self.default_reason

    default_reason = "internal error"


class ConfigError(Edge360Error):
    """A configuration value is unknown, of the wrong type or out of range (exit 2 on the CLI)."""

    status = 500

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config: {key}: {problem}")
        self.key = key
        self.problem = problem


class UsageError(Edge360Error):
    """A bad command-line argument (exit 2 with one line)."""

    status = 400


class BadRequest(Edge360Error):
    status = 400
    default_reason = "bad request"


class Forbidden(Edge360Error):
    status = 403
    default_reason = "forbidden"


class NotFound(Edge360Error):
    status = 404
    default_reason = "not found"


class MethodNotAllowed(Edge360Error):
    status = 405
    default_reason = "method not allowed"


class RangeNotSatisfiable(Edge360Error):
    status = 416
    default_reason = "range not satisfiable"

    def __init__(self, length: int) -> None:
        super().__init__(f"range not satisfiable for length {length}",
                         headers={"Content-Range": f"bytes */{length}"})
        self.length = length


class PreconditionFailed(Edge360Error):
    status = 412
    default_reason = "precondition failed"


class LoopDetected(Edge360Error):
    """RFC 8586: the request went round the cache tiers (CDN-Loop) more often than allowed."""

    status = 508
    default_reason = "loop detected"


class PayloadTooLarge(Edge360Error):
    status = 413
    default_reason = "payload too large"


class HeadersTooLarge(Edge360Error):
    status = 431
    default_reason = "request header fields too large"


class TooManyRequests(Edge360Error):
    status = 429
    default_reason = "too many requests"

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__("rate limited", headers={"Retry-After": str(max(1, retry_after))})


class Overloaded(Edge360Error):
    """Load shedding: the node is at a ceiling (connections, memory, waiters); try again soon."""

    status = 503
    default_reason = "service unavailable"

    def __init__(self, message: str = "overloaded", retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})


class UpstreamError(Edge360Error):
    """No usable upstream answer (connect error, timeout, bad or truncated body)."""

    status = 502
    default_reason = "bad gateway"

    def __init__(self, message: str, *, kind: str = "error") -> None:
        super().__init__(message)
        #: metric label: "timeout", "connect_error", "truncated", "invalid", ...
        self.kind = kind


class UpstreamTimeout(UpstreamError):
    status = 504
    default_reason = "gateway timeout"

    def __init__(self, message: str = "upstream timed out") -> None:
        super().__init__(message, kind="timeout")


class InvalidMedia(Edge360Error):
    """A title or playlist on disk is broken (missing files, byte ranges outside their file)."""

    status = 500
    default_reason = "invalid media"


class SourceError(ConnectionError):
    """An answer's body source broke off mid-answer (an upstream, a piece that failed
    validation, a file that shrank): the connection is aborted, never ended short as if whole.
    A ConnectionError, not an Edge360Error: no answer can be made any more, the head is out."""
