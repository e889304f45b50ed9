"""download_file against a local HTTP server that misbehaves on purpose: offline, a few seconds each."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import logging
import pickle
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from knnsvc.download import OFFLINE_BACKOFF_BUDGET_S, DownloadError, download_file, partial_path

PAYLOAD = random.Random(0).randbytes(200_000)
HALF = len(PAYLOAD) // 2
FAST = dict(progress=False, connect_timeout=0.5, read_timeout=0.5, retries=2, backoff_seconds=0.05)

Behaviour = Callable[["_Handler"], None]


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers each GET with the next behaviour of its server (the last one repeats)."""

    server: "_Server"

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        self.server.requests.append(dict(self.headers))
        behaviours = self.server.behaviours
        behaviour = behaviours.pop(0) if len(behaviours) > 1 else behaviours[0]
        try:
            behaviour(self)
        except OSError:  # the client gave up on us
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.behaviours: list[Behaviour] = []
        self.requests: list[dict[str, str]] = []
        self.release = threading.Event()

    def url(self, name: str = "WavLM-Large.pt") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"

    def serve(self, *behaviours: Behaviour) -> str:
        """Answer the coming requests with `behaviours`, in order; returns the file's URL."""
        self.behaviours[:] = behaviours
        return self.url()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Talk to 127.0.0.1 directly, whatever proxy the environment names."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def body(honour_range: bool = True, cut_at: int | None = None, stall_at: int | None = None) -> Behaviour:
    """Serve PAYLOAD (or the asked range of it), closing after `cut_at` or stalling at `stall_at` bytes."""

    def behaviour(h: _Handler) -> None:
        match = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range", ""))
        start = int(match[1]) if match and honour_range else 0
        if start >= len(PAYLOAD):
            h.send_response(416)
            h.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if start:
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            h.send_response(200)
        h.send_header("Content-Length", str(len(PAYLOAD) - start))
        h.end_headers()
        end = len(PAYLOAD) if cut_at is None else cut_at
        end = end if stall_at is None else stall_at
        h.wfile.write(PAYLOAD[start:end])
        if stall_at is not None:
            h.wfile.flush()
            h.server.release.wait(10)

    return behaviour


def status(code: int) -> Behaviour:
    def behaviour(h: _Handler) -> None:
        h.send_error(code)

    return behaviour


def silent(h: _Handler) -> None:
    """Accept the request and never answer."""
    h.server.release.wait(10)


def dribble_body(h: _Handler) -> None:
    """Send the head, then one body byte every 50 ms."""
    h.send_response(200)
    h.send_header("Content-Length", str(len(PAYLOAD)))
    h.end_headers()
    for i in range(len(PAYLOAD)):
        h.wfile.write(PAYLOAD[i : i + 1])
        if h.server.release.wait(0.05):
            return


def dribble_head(h: _Handler) -> None:
    """Send a status line, then one header byte every 50 ms, forever."""
    h.wfile.write(b"HTTP/1.0 200 OK\r\n")
    while not h.server.release.wait(0.05):
        h.wfile.write(b"X")


def test_download_complete_with_checksum(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "deep" / "folder" / "WavLM-Large.pt"
    url = server.serve(body())
    out = download_file(url, dest, sha256=hashlib.sha256(PAYLOAD).hexdigest().upper(), **FAST)
    assert out == dest
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["WavLM-Large.pt"]
    assert "Range" not in server.requests[0]


def test_partial_file_is_hidden_and_not_a_checkpoint(tmp_path: Path) -> None:
    partial = partial_path(tmp_path / "WavLM-Large.pt")
    assert partial.parent == tmp_path
    assert partial.name.startswith(".") and partial.suffix == ".partial"


def test_silent_server_times_out_quickly(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "WavLM-Large.pt"
    url = server.serve(silent)
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download_file(url, dest, **{**FAST, "retries": 1})
    assert time.monotonic() - start < 3.0
    message = str(info.value)
    assert "\n" not in message
    assert url in message and str(dest) in message
    assert "timed out after 0.5 s" in message and "2 attempts" in message
    assert isinstance(info.value, OSError)
    assert info.value.url == url and info.value.destination == dest
    assert str(pickle.loads(pickle.dumps(info.value))) == message
    assert list(tmp_path.iterdir()) == []


def test_truncated_body_is_resumed_with_range(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "WavLM-Large.pt"
    url = server.serve(body(cut_at=HALF), body())
    download_file(url, dest, sha256=hashlib.sha256(PAYLOAD).hexdigest(), **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 2
    assert server.requests[1]["Range"] == f"bytes={HALF}-"
    assert not partial_path(dest).exists()


def test_redirect_is_followed_and_range_kept(server: _Server, tmp_path: Path) -> None:
    def redirect(h: _Handler) -> None:
        h.send_response(302)
        h.send_header("Location", "/storage/blob")
        h.send_header("Content-Length", "0")
        h.end_headers()

    dest = tmp_path / "WavLM-Large.pt"
    url = server.serve(redirect, body(cut_at=HALF), redirect, body())
    download_file(url, dest, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [r.get("Range") for r in server.requests] == [None, None, f"bytes={HALF}-", f"bytes={HALF}-"]


def test_server_ignoring_range_starts_over(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "WavLM-Large.pt"
    partial_path(dest).write_bytes(b"\xff" * 1000)  # not a prefix of the file: must not survive
    url = server.serve(body(honour_range=False))
    download_file(url, dest, **FAST)
    assert server.requests[0]["Range"] == "bytes=1000-"
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("code", [404, 403])
def test_client_error_fails_at_once_and_removes_partial(server: _Server, tmp_path: Path, code: int) -> None:
    dest = tmp_path / "WavLM-Large.pt"
    partial_path(dest).write_bytes(PAYLOAD[:1000])
    url = server.serve(status(code))
    with pytest.raises(DownloadError, match=f"HTTP {code}") as info:
        download_file(url, dest, **{**FAST, "backoff_seconds": 5.0})
    assert "attempts" not in str(info.value)
    assert len(server.requests) == 1
    assert list(tmp_path.iterdir()) == []


def test_server_error_is_retried(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "WavLM-Large.pt"
    url = server.serve(status(503), status(429), body())
    download_file(url, dest, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 3


def test_server_error_keeps_partial_after_last_attempt(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "WavLM-Large.pt"
    url = server.serve(body(cut_at=HALF), status(500))
    with pytest.raises(DownloadError, match="HTTP 500.*3 attempts"):
        download_file(url, dest, **FAST)
    assert partial_path(dest).read_bytes() == PAYLOAD[:HALF]
    assert not dest.exists()


def test_stall_mid_body_times_out_then_resumes(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "WavLM-Large.pt"
    url = server.serve(body(stall_at=HALF), body())
    start = time.monotonic()
    download_file(url, dest, **FAST)
    assert time.monotonic() - start < 3.0
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[1]["Range"] == f"bytes={HALF}-"


def test_dribbling_body_counts_as_stalled(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "WavLM-Large.pt"
    url = server.serve(dribble_body)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="stalled"):
        download_file(url, dest, **{**FAST, "retries": 0})
    assert time.monotonic() - start < 3.0
    assert 0 < partial_path(dest).stat().st_size < 100  # kept: what came is a prefix
    assert not dest.exists()


def test_dribbling_head_times_out(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "WavLM-Large.pt"
    url = server.serve(dribble_head)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="timed out after 0.5 s"):
        download_file(url, dest, **{**FAST, "retries": 0})
    assert time.monotonic() - start < 3.0
    assert list(tmp_path.iterdir()) == []


def test_tls_handshake_that_never_completes_times_out(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # the kernel accepts; nobody answers
        url = f"https://127.0.0.1:{listener.getsockname()[1]}/WavLM-Large.pt"
        start = time.monotonic()
        with pytest.raises(DownloadError, match="connection timed out after 0.5 s, 2 attempts"):
            download_file(url, tmp_path / "WavLM-Large.pt", **{**FAST, "retries": 1})
        assert time.monotonic() - start < 3.0
    assert list(tmp_path.iterdir()) == []


def test_checksum_mismatch_fails_and_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "WavLM-Large.pt"
    url = server.serve(body())
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download_file(url, dest, sha256="0" * 64, **FAST)
    assert len(server.requests) == 1
    assert list(tmp_path.iterdir()) == []


def test_checksum_mismatch_of_resumed_file_downloads_afresh(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "WavLM-Large.pt"
    partial_path(dest).write_bytes(b"\xff" * 1000)  # a stale piece of another version of the file
    url = server.serve(body())
    download_file(url, dest, sha256=hashlib.sha256(PAYLOAD).hexdigest(), **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [r.get("Range") for r in server.requests] == ["bytes=1000-", None]


def test_connection_refused_fails_within_seconds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dest = tmp_path / "WavLM-Large.pt"
    start = time.monotonic()
    with pytest.raises(DownloadError, match="connection refused"):
        download_file(f"http://127.0.0.1:{port}/WavLM-Large.pt", dest)  # the default backoff
    assert time.monotonic() - start < OFFLINE_BACKOFF_BUDGET_S + 2.0
    assert capsys.readouterr().err == ""  # no empty progress bar before a response
    assert list(tmp_path.iterdir()) == []


def test_unresolvable_host_fails_within_seconds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def no_dns(*args: object, **kwargs: object) -> list:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="cannot resolve the host name.*4 attempts"):
        download_file(
            "https://github.invalid/WavLM-Large.pt", tmp_path / "WavLM-Large.pt", progress=False, backoff_seconds=0.1
        )
    assert time.monotonic() - start < OFFLINE_BACKOFF_BUDGET_S + 2.0


def test_interrupted_run_is_resumed_by_next_call(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "WavLM-Large.pt"
    url = server.serve(body())
    read1 = http.client.HTTPResponse.read1
    calls = []

    def interrupted_read1(self: http.client.HTTPResponse, n: int = -1) -> bytes:
        calls.append(n)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return read1(self, n)

    monkeypatch.setattr(http.client.HTTPResponse, "read1", interrupted_read1)
    with pytest.raises(KeyboardInterrupt):
        download_file(url, dest, **FAST)
    kept = partial_path(dest).read_bytes()
    assert 0 < len(kept) < len(PAYLOAD) and PAYLOAD.startswith(kept)
    assert not dest.exists()

    monkeypatch.setattr(http.client.HTTPResponse, "read1", read1)
    download_file(url, dest, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[1]["Range"] == f"bytes={len(kept)}-"


def test_complete_partial_file_is_finished_without_download(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "WavLM-Large.pt"
    partial_path(dest).write_bytes(PAYLOAD)  # a run stopped between the last byte and the rename
    download_file(server.serve(body()), dest, sha256=hashlib.sha256(PAYLOAD).hexdigest(), **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [r.get("Range") for r in server.requests] == [f"bytes={len(PAYLOAD)}-"]


def test_partial_file_longer_than_remote_starts_over(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "WavLM-Large.pt"
    partial_path(dest).write_bytes(PAYLOAD + b"stale tail")
    download_file(server.serve(body()), dest, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [r.get("Range") for r in server.requests] == [f"bytes={len(PAYLOAD) + 10}-", None]


def test_progress_bar_on_stderr(server: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "WavLM-Large.pt"
    download_file(server.serve(body()), dest, **{**FAST, "progress": True})
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "WavLM-Large.pt" in captured.err and "195k" in captured.err.lower()


def test_not_http_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="not an http"):
        download_file("ftp://example.org/x.pt", tmp_path / "x.pt", progress=False)


def test_offline_failure_is_one_line_with_the_attempts_it_made(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Offline: the retries are DEBUG detail; the log has one INFO line before and no warning, and the
    error counts the attempts that were really made and names the URL and the destination."""
    lookups: list[object] = []

    def no_dns(*args: object, **kwargs: object) -> list:
        lookups.append(args[0])
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    dest = tmp_path / "WavLM-Large.pt"
    url = "https://github.invalid/WavLM-Large.pt"
    with caplog.at_level(logging.INFO, logger="knnsvc"), pytest.raises(DownloadError) as info:
        download_file(url, dest, progress=False)  # the default retries and backoff
    message = str(info.value)
    assert "\n" not in message and url in message and str(dest) in message
    assert f"{len(lookups)} attempts" in message and len(lookups) > 1
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines == [(logging.INFO, f"downloading {url} to {dest}")]


def test_retries_of_a_failing_server_are_info_lines_without_a_wrong_total(
    server: _Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = server.serve(status(500))
    with caplog.at_level(logging.INFO, logger="knnsvc"), pytest.raises(DownloadError, match="HTTP 500.*3 attempts"):
        download_file(url, tmp_path / "f.bin", **FAST)
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert [r.levelno for r in retries] == [logging.INFO, logging.INFO]
    counts = [re.search(r"attempt \d+(?: of \d+)?", r.getMessage()) for r in retries]
    assert [m.group(0) for m in counts if m] == ["attempt 1", "attempt 2"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
