"""Download into shards against a real HTTP server on 127.0.0.1: failures, retries, limits and resuming."""

from __future__ import annotations

import http.server
import io
import json
import multiprocessing
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from tulip.data.download import DownloadOptions, download_config, download_tables
from tulip.data.fetch import FetchOptions
from tulip.data.images import ImageOptions
from tulip.data.reader import caption_of, iter_samples


def _png(size=(20, 12), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()
HTML = b"<!DOCTYPE html><html><body>404 - the image you asked for is gone</body></html>"


class _State:
    """What the server saw: requests per path, their times, and the most requests in flight per host."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: Counter = Counter()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.in_flight: Counter = Counter()
        self.max_in_flight: Counter = Counter()
        self.release_hold = threading.Event()


class _Handler(http.server.BaseHTTPRequestHandler):
    state: _State

    def log_message(self, *args):
        pass

    def _send(self, status: int, content_type: str, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server's method name
        state = self.state
        path = self.path
        with state.lock:
            state.requests[path] += 1
            state.times[path].append(time.monotonic())
            attempt = state.requests[path]
        try:
            self._route(path, attempt)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first (a timeout test)

    def _route(self, path: str, attempt: int) -> None:
        state = self.state
        if path.startswith("/img/"):
            self._send(200, "image/png", PNG)
        elif path.startswith("/flaky/"):  # fails once with a 500, then works
            self._send(500, "text/plain", b"try again") if attempt == 1 else self._send(200, "image/png", PNG)
        elif path == "/busy":
            self._send(503, "text/plain", b"busy")
        elif path.startswith("/ratelimited/"):  # one 429 asking for a one-second wait
            if attempt == 1:
                self._send(429, "text/plain", b"slow down", {"Retry-After": "1"})
            else:
                self._send(200, "image/png", PNG)
        elif path == "/slow":  # responds after the client's timeout
            time.sleep(2.0)
            self._send(200, "image/png", PNG)
        elif path == "/trickle":  # a valid header, then a few bytes at a time, far slower than the deadline
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            for offset in range(0, len(PNG), 8):
                self.wfile.write(PNG[offset: offset + 8])
                self.wfile.flush()
                time.sleep(0.1)
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/img/redirected.png")
            self.end_headers()
        elif path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()
        elif path == "/truncated":  # promises more bytes than it sends, then closes
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG) + 5000))
            self.end_headers()
            self.wfile.write(PNG[:40])
            self.close_connection = True
        elif path == "/html":
            self._send(200, "text/html", HTML)
        elif path == "/html-as-jpeg":
            self._send(200, "image/jpeg", HTML)
        elif path == "/png-as-text":
            self._send(200, "text/plain", PNG)
        elif path == "/large":
            self._send(200, "image/png", PNG + bytes(300_000))
        elif path.startswith("/hold/"):  # counts concurrent requests per Host header
            host = self.headers.get("Host", "")
            with state.lock:
                state.in_flight[host] += 1
                state.max_in_flight[host] = max(state.max_in_flight[host], state.in_flight[host])
            time.sleep(0.15)
            with state.lock:
                state.in_flight[host] -= 1
            self._send(200, "image/png", PNG)
        elif path.startswith("/stall/"):  # blocks until the test releases it
            state.release_hold.wait(timeout=60)
            self._send(200, "image/png", PNG)
        else:
            self.send_error(404)


@pytest.fixture()
def server():
    state = _State()
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    state.release_hold.set()
    httpd.shutdown()
    httpd.server_close()


def _table(urls: list[str], captions: list[str] | None = None) -> pa.Table:
    captions = captions or [f"caption {i}" for i in range(len(urls))]
    return pa.table({"url": urls, "caption": captions})


def _options(**fetch) -> DownloadOptions:
    values = dict(timeout_s=0.5, retries=1, backoff_s=0.01, max_bytes=200_000)
    values.update(fetch)
    return DownloadOptions(rows_per_shard=100, threads=8, fetch=FetchOptions(**values))


def _skip_reasons(out: Path) -> dict[str, str]:
    """Map each skipped URL's path to its reason, from the per-shard records."""
    reasons = {}
    for record in sorted(out.glob("shard-*.json")):
        for row in json.loads(record.read_text())["skipped_rows"]:
            reasons[row["url"].split(":", 2)[-1].split("/", 1)[-1]] = row["reason"]
    return reasons


def test_download_sorts_every_failure_into_its_bucket(server, tmp_path):
    """404s, timeouts, redirect loops, cut bodies and HTML pages are skipped with their reason."""
    base, state = server
    paths = ["img/a.png", "status/404", "busy", "slow", "trickle", "redirect", "loop", "truncated", "html",
             "html-as-jpeg", "png-as-text", "large", "flaky/1", "ratelimited/1"]
    stats = download_tables([_table([f"{base}/{p}" for p in paths])], tmp_path, _options())
    assert _skip_reasons(tmp_path) == {
        "status/404": "http_404",
        "busy": "http_503",
        "slow": "timeout",
        "trickle": "timeout",
        "loop": "too_many_redirects",
        "truncated": "truncated",
        "html": "not_an_image",
        "html-as-jpeg": "not_an_image",
        "large": "body_too_large",
    }
    assert stats["stored"] == 5
    stored = {caption_of(s) for s in iter_samples(tmp_path / "manifest.json")}
    assert stored == {"caption 0", "caption 5", "caption 10", "caption 12", "caption 13"}


def test_download_retries_only_retryable_failures(server, tmp_path):
    base, state = server
    paths = ["/status/404", "/busy", "/flaky/2", "/slow"]
    download_tables([_table([base + p for p in paths])], tmp_path, _options(retries=2))
    assert state.requests["/status/404"] == 1  # a client error is final
    assert state.requests["/busy"] == 3  # 503: the first try and two retries
    assert state.requests["/flaky/2"] == 2  # the retry after a 500 succeeds
    assert state.requests["/slow"] == 3


def test_download_waits_for_retry_after(server, tmp_path):
    """A 429's Retry-After of one second is honoured although the backoff is 10 ms."""
    base, state = server
    stats = download_tables([_table([f"{base}/ratelimited/2"])], tmp_path, _options(retries=1))
    assert stats["stored"] == 1
    first, second = state.times["/ratelimited/2"]
    assert second - first >= 0.9


def test_download_follows_redirects(server, tmp_path):
    base, state = server
    download_tables([_table([f"{base}/redirect"])], tmp_path, _options())
    assert state.requests["/img/redirected.png"] == 1
    [sample] = list(iter_samples(tmp_path / "manifest.json"))
    assert json.loads(sample["json"])["download"]["url"] == f"{base}/redirect"


def test_download_limits_requests_per_host(server, tmp_path):
    """With 8 threads and per_host 2, no host gets more than 2 requests at once, and hosts do not wait on each other."""
    base, state = server
    port = base.rsplit(":", 1)[1]
    urls = [f"http://127.0.0.1:{port}/hold/{i}" for i in range(8)] + [f"http://localhost:{port}/hold/{i}" for i in range(8)]
    options = DownloadOptions(rows_per_shard=100, threads=8, per_host=2, fetch=FetchOptions(timeout_s=5.0))
    stats = download_tables([_table(urls)], tmp_path, options)
    assert stats["stored"] == 16
    assert state.max_in_flight[f"127.0.0.1:{port}"] == 2
    assert state.max_in_flight[f"localhost:{port}"] == 2


def test_download_writes_manifest_and_records(server, tmp_path):
    base, _ = server
    urls = [f"{base}/img/{i}.png" for i in range(7)] + [f"{base}/status/404"]
    table = pa.table({"url": urls, "caption": [f"caption {i}" for i in range(8)],
                      "recaption": [f"a longer caption {i}" if i % 2 else None for i in range(8)],
                      "label": list(range(8))})
    options = DownloadOptions(rows_per_shard=3, threads=4, fetch=FetchOptions(retries=0))
    stats = download_tables([table], tmp_path, options)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [s["num_samples"] for s in manifest["shards"]] == [3, 3, 1]
    assert [s["rows"] for s in manifest["shards"]] == [[0, 3], [3, 6], [6, 8]]
    assert manifest["num_recaptions"] == 3  # rows 1, 3 and 5; row 7 was not stored
    assert stats["skipped"] == {"http_404": 1}
    record = json.loads((tmp_path / "shard-000002.json").read_text())
    assert record["skipped_rows"] == [{"key": "000000007", "row": 7, "url": f"{base}/status/404", "reason": "http_404",
                                       "detail": f"{base}/status/404"}]
    samples = list(iter_samples(tmp_path / "manifest.json"))
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(7)]
    assert caption_of(samples[1], "recap.txt") == "a longer caption 1"
    assert "recap.txt" not in samples[0]
    meta = json.loads(samples[4]["json"])
    assert meta["label"] == 4
    assert meta["download"]["row"] == 4
    assert (meta["download"]["width"], meta["download"]["height"]) == (20, 12)


def test_download_keys_number_rows_across_tables(tmp_path):
    """Keys continue from one table to the next and stay unique."""
    image = tmp_path / "a.png"
    image.write_bytes(PNG)
    tables = [_table([str(image)] * 3), _table([str(image)] * 2)]
    download_tables(tables, tmp_path / "out", DownloadOptions(rows_per_shard=2, threads=2))
    keys = [s["__key__"] for s in iter_samples(tmp_path / "out" / "manifest.json")]
    assert keys == ["000000000", "000000001", "000000002", "000000003", "000000004"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [(s["table"], s["rows"]) for s in manifest["shards"]] == [(0, [0, 2]), (0, [2, 3]), (1, [0, 2])]


def test_download_processes_write_the_same_shards(tmp_path):
    """Shards downloaded by two processes are byte for byte those of one process."""
    for i in range(6):
        Image.new("RGB", (20, 20), (40 * i, 0, 0)).save(tmp_path / f"{i}.png")
    table = _table([str(tmp_path / f"{i}.png") for i in range(6)] + ["ftp://example.invalid/a.png"])
    download_tables([table], tmp_path / "one", DownloadOptions(rows_per_shard=2, threads=2))
    download_tables([table], tmp_path / "two", DownloadOptions(rows_per_shard=2, threads=2, processes=2))
    for name in ("shard-000000.tar", "shard-000001.tar", "shard-000002.tar", "shard-000003.tar"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    record = json.loads((tmp_path / "two" / "shard-000003.json").read_text())
    assert [row["reason"] for row in record["skipped_rows"]] == ["invalid_url"]


def test_download_resolves_relative_paths_from_the_table(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(PNG)
    stats = download_tables([_table(["images/a.png", f"file://{tmp_path}/images/a.png"])], tmp_path / "out",
                            DownloadOptions(threads=2), base_dirs=[tmp_path])
    assert stats["stored"] == 2


def test_rerun_keeps_complete_shards_and_redoes_the_rest(server, tmp_path):
    """A shard is complete only with its tar, its record and a matching size; everything else is redone."""
    base, state = server
    urls = [f"{base}/img/{i}.png" for i in range(12)]
    options = DownloadOptions(rows_per_shard=4, threads=4)
    download_tables([_table(urls)], tmp_path, options)
    first = {p.name: p.read_bytes() for p in tmp_path.glob("shard-*.tar")}
    (tmp_path / "shard-000001.json").unlink()  # interrupted between the tar's rename and its record
    tar = tmp_path / "shard-000002.tar"
    tar.write_bytes(tar.read_bytes()[:3000])  # cut short after it was recorded
    (tmp_path / ".shard-000000.tar.tmp").write_bytes(b"partial")  # a temporary file left behind
    state.requests.clear()

    stats = download_tables([_table(urls)], tmp_path, options)
    assert stats["shards_resumed"] == 1
    assert sorted(state.requests) == sorted(f"/img/{i}.png" for i in range(4, 12))
    assert {p.name: p.read_bytes() for p in tmp_path.glob("shard-*.tar")} == first
    assert not list(tmp_path.glob(".*.tmp"))


def test_changed_image_options_redo_every_shard(server, tmp_path):
    base, state = server
    urls = [f"{base}/img/{i}.png" for i in range(4)]
    download_tables([_table(urls)], tmp_path, DownloadOptions(rows_per_shard=2, threads=2))
    state.requests.clear()
    options = DownloadOptions(rows_per_shard=2, threads=2, image=ImageOptions(jpeg_quality=80))
    stats = download_tables([_table(urls)], tmp_path, options)
    assert stats["shards_resumed"] == 0
    assert sum(state.requests.values()) == 4


def _download_in_process(urls: list[str], out: str) -> None:
    download_tables([_table(urls)], out, DownloadOptions(rows_per_shard=2, threads=2, fetch=FetchOptions(timeout_s=60)))


@pytest.mark.timeout(120)
def test_killed_download_resumes_without_refetching(server, tmp_path):
    """A download killed inside its second shard leaves no manifest; the rerun fetches only what was missing."""
    base, state = server
    urls = [f"{base}/img/0.png", f"{base}/img/1.png", f"{base}/stall/2", f"{base}/img/3.png"]
    process = multiprocessing.get_context("spawn").Process(target=_download_in_process, args=(urls, str(tmp_path)))
    process.start()
    deadline = time.monotonic() + 60
    while not (tmp_path / "shard-000000.json").exists() or state.requests["/stall/2"] == 0:
        assert time.monotonic() < deadline, "the first shard never finished"
        time.sleep(0.05)
    process.kill()
    process.join()
    assert not (tmp_path / "manifest.json").exists()
    assert not (tmp_path / "shard-000001.tar").exists()

    state.release_hold.set()
    state.requests.clear()
    stats = download_tables([_table(urls)], tmp_path, DownloadOptions(rows_per_shard=2, threads=2))
    assert stats["shards_resumed"] == 1
    assert stats["stored"] == 4
    assert sorted(state.requests) == ["/img/3.png", "/stall/2"]


def test_download_config_splits_the_flat_section():
    columns, options = download_config({"url_column": "URL", "recaption_column": "re", "timeout_s": 3.0,
                                        "resize_mode": "shorter", "resize_size": 64, "background": [0, 0, 0],
                                        "rows_per_shard": 7})
    assert (columns.url, columns.caption, columns.recaption) == ("URL", "caption", "re")
    assert options.fetch.timeout_s == 3.0
    assert options.image.resize_size == 64
    assert options.image.background == (0, 0, 0)
    assert options.rows_per_shard == 7


def test_download_config_names_unknown_keys():
    with pytest.raises(ValueError, match="resize_shorter"):
        download_config({"resize_shorter": 64})
