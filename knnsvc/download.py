"""Downloading one file over HTTP(S) without hanging: timeouts, retries, resume, checksum, one error.

`download_file` streams a URL into a hidden temporary file next to the destination
(``.<name>.partial``: no folder scan takes it for audio or a checkpoint) and renames it onto the
destination only when it is complete: as long as the Content-Length or Content-Range says, and
matching `sha256` when one is given (a response with neither length ends where the connection
does, so only the checksum can tell a cut one). The partial file is always a prefix of the remote
file, so a later attempt, or a later run after a failure or Ctrl-C, asks for the rest with a
``Range`` header and appends it (a server that answers 200 instead gets the file from the start).

Time limits. Nothing waits without bound on the network, apart from the name lookup, which the
system resolver limits (``/etc/resolv.conf``):

- `connect_timeout` bounds the TCP connect, a proxy's CONNECT answer and the TLS handshake.
- `read_timeout` bounds every wait for data once connected, and also the whole wait for the
  response head (status line and headers), so a server that answers one header byte at a time
  is cut off too.
- While the body streams, every `read_timeout`-long window must bring at least
  `MIN_BYTES_PER_SECOND` per second on average; a server that dribbles a byte every few seconds
  fails the attempt as stalled. A stalled attempt thus ends within about 2 x `read_timeout`.

What is retried. Timeouts, stalls, dropped connections, truncated bodies and HTTP 5xx/408/429
are retried up to `retries` times with exponential backoff (``backoff_seconds * 2**k``), each
retry resuming the partial file. A host that cannot be resolved, refuses the connection or is
unreachable is retried only while the total backoff for it stays within
`OFFLINE_BACKOFF_BUDGET_S`, so an offline machine gets its error within seconds. HTTP 4xx (404,
403, ...) fails at once.

What happens to the partial file when the download fails for good:

- removed when resuming cannot help: an HTTP 4xx answer, a checksum mismatch, a file that would
  be empty;
- kept for the next call to resume when it holds data and the failure was the network's
  (timeouts, stalls, dropped connections, 5xx) or local (a full disk, no write permission), and
  after KeyboardInterrupt, which propagates unchanged.

A partial file assembled from more than one response that then fails its checksum gets one fresh
download from the start before the error, since the server may have changed the file between the
pieces. Two processes downloading the same destination at the same time are not coordinated.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import re
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from tqdm import tqdm

from knnsvc.runtime import first_line

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 16
"""Most bytes asked of the socket per read."""

MIN_BYTES_PER_SECOND = 1024
"""Slowest average rate over a `read_timeout`-long window that does not count as a stall."""

OFFLINE_BACKOFF_BUDGET_S = 2.0
"""Most seconds slept, per download, before retrying a host that is unresolvable or refuses."""

_RETRY_STATUS = {408, 429}
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_OFFLINE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN}


class DownloadError(OSError):
    """A download that failed for good; the message is one line naming URL, destination and reason.

    A subclass of OSError, like the network and file errors it stands for, so code that handles
    I/O failures handles it too.

    Attributes:
        url: what was being downloaded.
        destination: where it was to be saved.
        reason: why it failed, e.g. ``"timed out after 15 s waiting for the server, 4 attempts"``.
    """

    def __init__(self, url: str, destination: str | os.PathLike, reason: str) -> None:
        self.url = url
        self.destination = Path(destination)
        self.reason = reason
        super().__init__(
            f"cannot download {url} to {self.destination} ({reason}): download it yourself and save it there"
        )

    def __reduce__(self) -> tuple:
        return type(self), (self.url, self.destination, self.reason)


def partial_path(destination: str | os.PathLike) -> Path:
    """The temporary file a download of `destination` streams into: ``.<name>.partial`` beside it."""
    destination = Path(destination)
    return destination.with_name(f".{destination.name}.partial")


def download_file(
    url: str,
    destination: Path,
    *,
    progress: bool = True,
    connect_timeout: float = 15.0,
    read_timeout: float = 60.0,
    retries: int = 3,
    backoff_seconds: float = 1.0,
    sha256: str | None = None,
) -> Path:
    """Download `url` to `destination`, resuming a partial file left by an earlier attempt or run.

    The parent folder is created; an existing `destination` is replaced only by a complete file.
    See the module docstring for the time limits, the retry rules and the partial file.

    Args:
        url: an http:// or https:// URL (redirects are followed).
        destination: the file to create.
        progress: show a progress bar (bytes) on stderr.
        connect_timeout: seconds for the TCP connect and TLS handshake.
        read_timeout: seconds without data (and for the response head) before an attempt fails.
        retries: how many times a failed attempt is retried; at most ``retries + 1`` attempts.
        backoff_seconds: the wait before the first retry, doubled before each further one.
        sha256: expected hex digest of the whole file, checked before the rename.

    Returns:
        `destination`.

    Raises:
        DownloadError: the download failed for good.
        KeyboardInterrupt: propagated; the partial file is kept for the next call to resume.
    """
    destination = Path(destination)
    partial_file = partial_path(destination)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(url, destination, "not an http:// or https:// URL")
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(url, destination, f"cannot create the folder: {first_line(err)}") from None
    limits = _Limits(connect_timeout, read_timeout)
    opener = urllib.request.build_opener(_HTTPHandler(read_timeout), _HTTPSHandler(read_timeout))
    log.info("downloading %s to %s", url, destination)
    attempts = 0
    offline_slept = 0.0
    bar = _ProgressBar(destination.name, progress)
    try:
        while True:
            attempts += 1
            try:
                assembled = _attempt(opener, url, partial_file, limits, bar)
                _check_sha256(partial_file, sha256, assembled)
                _finish(partial_file, destination)
                return destination
            except _AttemptFailed as failure:
                gives_up = failure.policy in (_Policy.FATAL, _Policy.DISCARD) or attempts > retries
                delay = backoff_seconds * 2 ** (attempts - 1)
                if failure.policy is _Policy.RESTART:
                    partial_file.unlink(missing_ok=True)
                    delay = 0.0
                elif failure.policy is _Policy.OFFLINE:
                    gives_up |= offline_slept >= OFFLINE_BACKOFF_BUDGET_S
                    delay = min(delay, OFFLINE_BACKOFF_BUDGET_S - offline_slept)
                    offline_slept += delay
                if gives_up:
                    _give_up(url, destination, partial_file, failure, attempts)
                # the retries are details (DEBUG while the host is unreachable, INFO otherwise); the
                # one line a user needs is the DownloadError, which counts the attempts made
                log.log(
                    logging.DEBUG if failure.policy is _Policy.OFFLINE else logging.INFO,
                    "downloading %s: attempt %d failed (%s); retrying in %g s",
                    url, attempts, failure.reason, delay,
                )
                time.sleep(delay)
    except KeyboardInterrupt:
        if _remove_if_empty(partial_file):
            log.info("download of %s interrupted", url)
        else:
            log.info("download of %s interrupted; %s is kept for the next run to resume", url, partial_file)
        raise
    finally:
        bar.close()


@dataclass(frozen=True)
class _Limits:
    """The timeouts of one download, in seconds."""

    connect_timeout: float
    read_timeout: float


class _ProgressBar:
    """A tqdm byte counter on stderr, drawn from the first response on (nothing while connecting)."""

    def __init__(self, label: str, enabled: bool) -> None:
        self._label = label
        self._enabled = enabled
        self._bar: tqdm | None = None

    def restart(self, total: int | None, done: int) -> None:
        """A new response: `done` of `total` bytes (None: unknown) are in the file."""
        if not self._enabled:
            return
        if self._bar is None:
            self._bar = tqdm(
                desc=self._label, total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr
            )
        else:
            self._bar.total = total
            self._bar.reset()
        self._bar.update(done)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class _Policy(Enum):
    """What a failed attempt means for the next one."""

    RETRY = "retry"  # transient: back off, then resume the partial file
    OFFLINE = "offline"  # host unreachable: retry only within OFFLINE_BACKOFF_BUDGET_S
    RESTART = "restart"  # the partial file cannot be continued: remove it, retry from the start
    FATAL = "fatal"  # retrying cannot help: fail now, keep the partial file for a later run
    DISCARD = "discard"  # retrying cannot help, nor can resuming: remove the partial file, fail now


class _AttemptFailed(Exception):
    """One attempt's failure: a one-line reason and what it means for the next attempt."""

    def __init__(self, reason: str, policy: _Policy) -> None:
        super().__init__(reason)
        self.reason = reason
        self.policy = policy


def _attempt(
    opener: urllib.request.OpenerDirector, url: str, partial_file: Path, limits: _Limits, bar: _ProgressBar
) -> bool:
    """One request, streaming the (rest of the) body into `partial_file`.

    Returns:
        True if the file is assembled: the bytes were appended to a non-empty partial file, or it was
        complete already.

    Raises:
        _AttemptFailed: anything went wrong; its policy says what to do next.
    """
    offset = partial_file.stat().st_size if partial_file.is_file() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    response = _open(opener, urllib.request.Request(url, headers=headers), offset, limits)
    if response is None:
        log.info("%s already holds all of %s", partial_file, url)
        return True
    try:
        with response:
            start, total = _body_span(response, offset)
            if offset and not start:
                log.info("%s: the server does not resume downloads; starting over", url)
            bar.restart(total, start)
            with open(partial_file, "ab" if start else "wb") as out:
                size = _stream(response, out, start, limits, bar)
    except OSError as err:
        raise _AttemptFailed(f"cannot write {partial_file}: {first_line(err)}", _Policy.FATAL) from err
    if total is not None and size != total:
        raise _AttemptFailed(f"connection closed after {size:,} of {total:,} bytes", _Policy.RETRY)
    return start > 0


def _open(
    opener: urllib.request.OpenerDirector, request: urllib.request.Request, offset: int, limits: _Limits
) -> http.client.HTTPResponse | None:
    """The response to `request`; None if the server says the `offset` bytes there are the whole file."""
    try:
        return opener.open(request, timeout=limits.connect_timeout)
    except urllib.error.HTTPError as err:
        # an earlier run stopped between the last byte and the rename: 416 with "bytes */<offset>"
        if err.code == 416 and (err.headers.get("Content-Range") or "").strip() == f"bytes */{offset}":
            err.close()
            return None
        raise _network_failure(err, limits) from err
    except (OSError, http.client.HTTPException) as err:
        raise _network_failure(err, limits) from err


def _body_span(response: http.client.HTTPResponse, offset: int) -> tuple[int, int | None]:
    """(first byte, total size or None) of the body, from the status and headers.

    Raises:
        _AttemptFailed: a status other than 200/206, or a 206 that does not continue the file.
    """
    if response.status == 200:
        return 0, _int_or_none(response.headers.get("Content-Length"))
    if response.status != 206:
        raise _AttemptFailed(f"unexpected HTTP {response.status} {response.reason}", _Policy.DISCARD)
    match = _CONTENT_RANGE.fullmatch((response.headers.get("Content-Range") or "").strip())
    if match is None or int(match[1]) != offset:
        got = response.headers.get("Content-Range")
        raise _AttemptFailed(f"the server resumed at the wrong place (Content-Range {got!r})", _Policy.RESTART)
    total = None if match[3] == "*" else int(match[3])
    return offset, int(match[2]) + 1 if total is None else total


def _stream(
    response: http.client.HTTPResponse, out: BinaryIO, size: int, limits: _Limits, bar: _ProgressBar
) -> int:
    """Copy the body to `out` until it ends; returns the file size reached.

    Raises:
        _AttemptFailed: a network error, or less than MIN_BYTES_PER_SECOND over a read_timeout window.
    """
    window_start = time.monotonic()
    window_bytes = 0
    while data := _read(response, limits):
        out.write(data)
        size += len(data)
        bar.update(len(data))
        window_bytes += len(data)
        elapsed = time.monotonic() - window_start
        if elapsed >= limits.read_timeout:
            if window_bytes < MIN_BYTES_PER_SECOND * elapsed:
                reason = f"transfer stalled: {window_bytes} bytes in {elapsed:.1f} s"
                raise _AttemptFailed(reason, _Policy.RETRY)
            window_start += elapsed
            window_bytes = 0
    return size


def _read(response: http.client.HTTPResponse, limits: _Limits) -> bytes:
    try:
        return response.read1(CHUNK_BYTES)
    except (OSError, http.client.HTTPException) as err:
        raise _network_failure(err, limits) from err


def _network_failure(err: Exception, limits: _Limits) -> _AttemptFailed:
    """Classify an exception from urllib or http.client."""
    log.debug("network error: %r", err)
    if isinstance(err, urllib.error.HTTPError):
        err.close()
        reason = f"HTTP {err.code} {err.reason}"
        if err.code >= 500 or err.code in _RETRY_STATUS:
            return _AttemptFailed(reason, _Policy.RETRY)
        if err.code == 416:
            return _AttemptFailed(f"{reason}: the partial file does not fit the remote file", _Policy.RESTART)
        return _AttemptFailed(reason, _Policy.DISCARD)
    # urllib wraps errors of the connect and request phase in URLError; later ones come bare.
    connecting = isinstance(err, urllib.error.URLError)
    cause = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(cause, socket.gaierror):
        return _AttemptFailed(f"cannot resolve the host name ({cause.strerror or cause})", _Policy.OFFLINE)
    if isinstance(cause, ConnectionRefusedError):
        return _AttemptFailed("connection refused", _Policy.OFFLINE)
    if isinstance(cause, OSError) and cause.errno in _OFFLINE_ERRNOS:
        return _AttemptFailed(f"network unreachable ({cause.strerror})", _Policy.OFFLINE)
    if isinstance(cause, TimeoutError):
        if connecting:
            return _AttemptFailed(f"connection timed out after {limits.connect_timeout:g} s", _Policy.RETRY)
        return _AttemptFailed(f"timed out after {limits.read_timeout:g} s waiting for the server", _Policy.RETRY)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return _AttemptFailed(f"TLS certificate rejected ({first_line(cause)})", _Policy.FATAL)
    if isinstance(cause, (OSError, http.client.HTTPException)):
        return _AttemptFailed(f"connection failed ({type(cause).__name__}: {first_line(cause)})", _Policy.RETRY)
    return _AttemptFailed(first_line(cause), _Policy.FATAL)


def _check_sha256(partial_file: Path, expected: str | None, assembled: bool) -> None:
    if expected is None:
        return
    digest = hashlib.sha256()
    try:
        with open(partial_file, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    except OSError as err:
        raise _AttemptFailed(f"cannot read {partial_file}: {first_line(err)}", _Policy.FATAL) from err
    if digest.hexdigest() != expected.strip().lower():
        reason = f"sha256 mismatch: expected {expected.strip().lower()}, got {digest.hexdigest()}"
        raise _AttemptFailed(reason, _Policy.RESTART if assembled else _Policy.DISCARD)


def _finish(partial_file: Path, destination: Path) -> None:
    try:
        os.replace(partial_file, destination)
    except OSError as err:
        raise _AttemptFailed(f"cannot rename {partial_file}: {first_line(err)}", _Policy.FATAL) from err
    log.info("saved %s", destination)


def _give_up(url: str, destination: Path, partial_file: Path, failure: _AttemptFailed, attempts: int) -> NoReturn:
    if failure.policy is _Policy.DISCARD:
        partial_file.unlink(missing_ok=True)
    elif not _remove_if_empty(partial_file):
        log.info("%s is kept for the next download to resume", partial_file)
    reason = failure.reason if attempts == 1 else f"{failure.reason}, {attempts} attempts"
    raise DownloadError(url, destination, reason) from None


def _remove_if_empty(path: Path) -> bool:
    """Remove `path` if it is an empty file; True if no file is left."""
    try:
        if path.stat().st_size == 0:
            path.unlink()
    except FileNotFoundError:
        pass
    return not path.exists()


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


class _TimedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection with `timeout` for connecting, then `read_timeout` for reading.

    The response head must arrive complete within `read_timeout`: a timer shuts the socket down
    when it does not, which is reported as a TimeoutError. `_TimedHTTPSConnection` adds TLS.
    """

    def __init__(self, *args: Any, read_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timeout = read_timeout

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self._read_timeout)

    def getresponse(self) -> http.client.HTTPResponse:
        lock = threading.Lock()
        state = {"done": False, "expired": False}

        def expire() -> None:
            with lock:
                sock = self.sock
                if state["done"] or sock is None:
                    return
                state["expired"] = True
                try:
                    # the plain socket's shutdown, also for TLS: ends the blocked read with EOF
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass

        def finish() -> bool:
            """Stop the timer; True if it had expired."""
            timer.cancel()
            with lock:
                state["done"] = True
                return state["expired"]

        timer = threading.Timer(self._read_timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            response = super().getresponse()
        except (OSError, http.client.HTTPException):
            if not finish():
                raise
            raise TimeoutError(f"no response within {self._read_timeout:g} s") from None
        finally:
            timer.cancel()  # also on KeyboardInterrupt
        if finish():  # the cut-off head may still have parsed as a response
            response.close()
            raise TimeoutError(f"no response within {self._read_timeout:g} s")
        return response


class _TimedHTTPSConnection(_TimedHTTPConnection, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, read_timeout: float) -> None:
        super().__init__()
        self._read_timeout = read_timeout

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(partial(_TimedHTTPConnection, read_timeout=self._read_timeout), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, read_timeout: float) -> None:
        super().__init__()
        self._read_timeout = read_timeout

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        conn = partial(_TimedHTTPSConnection, read_timeout=self._read_timeout)
        # typeshed omits HTTPSHandler._context, the SSL context urllib's own https_open passes
        return self.do_open(conn, req, context=self._context)  # type: ignore[attr-defined]
