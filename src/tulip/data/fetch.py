"""Fetch the bytes behind a table's image column: http(s) URLs, ``file://`` URLs or local paths.

HTTP requests have a deadline, a size limit and a redirect limit. Timeouts, connection errors,
truncated bodies, 429 and 5xx responses are retried with exponential backoff, waiting at least a
``Retry-After`` that the server sends. Other client errors are final. Every failure raises
:class:`~tulip.data.stats.SkipSample` with its bucket. How many requests go to one host at a time
is decided by the caller (see ``tulip.data.download``), which uses :func:`host_of`.
"""

from __future__ import annotations

import http.client
import logging
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

from tulip.data.stats import SkipSample

logger = logging.getLogger(__name__)

USER_AGENT = "tulip-downloader/0.1 (image-text pretraining data; +https://arxiv.org/abs/2503.15485)"
_REDIRECT_CODES = {301, 302, 303, 307, 308}
_CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class FetchOptions:
    timeout_s: float = 10.0  # per attempt: connecting, and reading the whole body
    retries: int = 2  # extra attempts after a retryable failure
    backoff_s: float = 0.5  # wait before the first retry; doubles on each further retry
    max_backoff_s: float = 30.0  # cap on one wait, including a server's Retry-After
    max_bytes: int = 50_000_000  # larger bodies and files are skipped
    max_redirects: int = 5
    user_agent: str = USER_AGENT

    def __post_init__(self):
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
        if self.retries < 0:
            raise ValueError(f"retries must be 0 or more, got {self.retries}")


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str | None  # the response's media type, None for local files
    attempts: int  # requests made, 1 when the first one succeeded


class _Retryable(Exception):
    """A failed attempt that may succeed when repeated."""

    def __init__(self, skip: SkipSample, retry_after_s: float | None = None):
        super().__init__(str(skip))
        self.skip = skip
        self.retry_after_s = retry_after_s


class _RedirectLimit(urllib.request.HTTPRedirectHandler):
    def __init__(self, max_redirects: int):
        super().__init__()
        self.max_redirections = max_redirects


def is_remote(source: str) -> bool:
    return urllib.parse.urlsplit(source).scheme in ("http", "https")


def host_of(source: str) -> str:
    """Return ``host[:port]`` of an http(s) URL, or "" for local files."""
    return urllib.parse.urlsplit(source).netloc.lower() if is_remote(source) else ""


def local_path(source: str, base_dir: Path | None) -> Path:
    """Return the file a ``file://`` URL or a path names; relative paths are taken from ``base_dir``."""
    parsed = urllib.parse.urlsplit(source)
    path = Path(urllib.parse.unquote(parsed.path)) if parsed.scheme == "file" else Path(source).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def fetch(source: str, options: FetchOptions, base_dir: Path | None = None) -> Fetched:
    """Return the bytes of ``source``.

    Raises:
        SkipSample: the bucket of the last failure once no retry is left.
    """
    source = source.strip()
    if not source:
        raise SkipSample("missing_url")
    scheme = urllib.parse.urlsplit(source).scheme
    if scheme not in ("", "file", "http", "https"):
        raise SkipSample("invalid_url", f"{source}: only http(s) URLs, file:// URLs and paths can be fetched")
    if not is_remote(source):
        return Fetched(_read_local(local_path(source, base_dir), options), None, 1)
    for attempt in range(1, options.retries + 2):
        try:
            data, content_type = _http_get(source, options)
            return Fetched(data, content_type, attempt)
        except _Retryable as failure:
            if attempt > options.retries:
                raise failure.skip from None
            delay = min(options.max_backoff_s, options.backoff_s * 2 ** (attempt - 1))
            delay *= random.uniform(0.8, 1.2)  # jitter, so threads that failed together do not retry together
            if failure.retry_after_s is not None:
                delay = max(delay, min(failure.retry_after_s, options.max_backoff_s))
            logger.debug("retrying %s in %.2f s after %s (attempt %d)", source, delay, failure.skip.reason, attempt)
            time.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _read_local(path: Path, options: FetchOptions) -> bytes:
    try:
        size = path.stat().st_size
        if size > options.max_bytes:
            raise SkipSample("body_too_large", f"{path}: {size} bytes, limit {options.max_bytes}")
        return path.read_bytes()
    except FileNotFoundError as error:
        raise SkipSample("missing_file", str(path)) from error
    except IsADirectoryError as error:
        raise SkipSample("missing_file", f"{path} is a directory") from error
    except OSError as error:
        raise SkipSample("read_error", f"{path}: {error}") from error


def _retry_after(headers) -> float | None:
    """Seconds from a ``Retry-After`` header, given as seconds or as an HTTP date."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _http_get(url: str, options: FetchOptions) -> tuple[bytes, str | None]:
    opener = urllib.request.build_opener(_RedirectLimit(options.max_redirects))
    request = urllib.request.Request(url, headers={"User-Agent": options.user_agent})
    deadline = time.monotonic() + options.timeout_s
    try:
        with opener.open(request, timeout=options.timeout_s) as response:
            content_type = response.headers.get_content_type() if response.headers.get("Content-Type") else None
            declared = response.headers.get("Content-Length", "")
            length = int(declared) if declared.isdigit() else None
            if length is not None and length > options.max_bytes:
                raise SkipSample("body_too_large", f"{url}: Content-Length {length}, limit {options.max_bytes}")
            return _read_body(response, url, options, deadline, length), content_type
    except SkipSample:
        raise
    except urllib.error.HTTPError as error:
        if error.code in _REDIRECT_CODES:
            raise SkipSample("too_many_redirects", f"{url}: more than {options.max_redirects}") from error
        skip = SkipSample(f"http_{error.code}", url)
        if error.code == 429 or error.code >= 500:
            raise _Retryable(skip, _retry_after(error.headers)) from error
        raise skip from error
    except urllib.error.URLError as error:
        if isinstance(error.reason, (TimeoutError, socket.timeout)):
            raise _Retryable(SkipSample("timeout", f"{url}: {error.reason}")) from error
        raise _Retryable(SkipSample("network_error", f"{url}: {error.reason}")) from error
    except (TimeoutError, socket.timeout) as error:
        raise _Retryable(SkipSample("timeout", f"{url}: {error}")) from error
    except http.client.IncompleteRead as error:
        raise _Retryable(SkipSample("truncated", f"{url}: {len(error.partial)} bytes received, "
                                                 f"{error.expected} more expected")) from error
    except (http.client.HTTPException, ConnectionError, OSError) as error:
        raise _Retryable(SkipSample("network_error", f"{url}: {type(error).__name__}: {error}")) from error
    except ValueError as error:
        raise SkipSample("invalid_url", f"{url}: {error}") from error


def _read_body(response, url: str, options: FetchOptions, deadline: float, length: int | None) -> bytes:
    chunks, total = [], 0
    while True:
        # The socket timeout bounds each read; this deadline bounds a server that trickles bytes.
        if time.monotonic() > deadline:
            raise _Retryable(SkipSample("timeout", f"{url}: body not complete after {options.timeout_s} s"))
        chunk = response.read(_CHUNK_BYTES)
        if not chunk:
            # read(n) returns b"" at a closed connection even when Content-Length promised more.
            if length is not None and total < length:
                raise _Retryable(SkipSample("truncated", f"{url}: {total} of {length} bytes received"))
            return b"".join(chunks)
        total += len(chunk)
        if total > options.max_bytes:
            raise SkipSample("body_too_large", f"{url}: more than {options.max_bytes} bytes")
        chunks.append(chunk)
