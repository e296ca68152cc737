"""Download stage against a real HTTP server on 127.0.0.1 and against local paths."""

from __future__ import annotations

import http.server
import io
import json
import threading
from pathlib import Path

import pytest
from PIL import Image

from tulip.data.download import DownloadOptions, download_table, read_samples
from tulip.data.table import read_pairs_table


def _png(size=(20, 12), mode="RGB", color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


ROUTES = {
    "/red.png": (200, "image/png", _png()),
    "/gray.png": (200, "image/png", _png(mode="L", color=128)),
    "/page.html": (200, "text/html", b"<html><body>not an image</body></html>"),
    "/tiny.png": (200, "image/png", _png(size=(4, 4))),
}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's method name
        if self.path == "/moved.png":
            self.send_response(302)
            self.send_header("Location", "/red.png")
            self.end_headers()
            return
        if self.path not in ROUTES:
            self.send_error(404)
            return
        status, content_type, body = ROUTES[self.path]
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_from_http_server(server, tmp_path):
    records = [
        {"url": f"{server}/red.png", "caption": "a red square"},
        {"url": f"{server}/gray.png", "caption": "a grey square"},
        {"url": f"{server}/moved.png", "caption": "a redirected square"},
        {"url": f"{server}/missing.png", "caption": "gone"},
        {"url": f"{server}/page.html", "caption": "html served as an image"},
        {"url": f"{server}/tiny.png", "caption": "too small"},
        {"url": f"{server}/red.png", "caption": "   "},
    ]
    stats = download_table(records, tmp_path, DownloadOptions(retries=0, min_size=8))
    assert stats["rows"] == 7
    assert stats["stored"] == 3
    assert stats["skipped"] == {"decode_error": 1, "empty_caption": 1, "http_404": 1, "too_small": 1}
    samples = read_samples(tmp_path / "samples.tsv")
    assert [s["caption"] for s in samples] == ["a red square", "a grey square", "a redirected square"]
    for sample in samples:
        with Image.open(sample["image"]) as image:
            assert image.format == "JPEG"
            assert image.mode == "RGB"
            assert image.size == (20, 12)
    skipped = json.loads((tmp_path / "skipped.json").read_text())
    assert {s["reason"] for s in skipped} == {"decode_error", "empty_caption", "http_404", "too_small"}


def test_download_local_paths_and_tables(tmp_path):
    image_path = tmp_path / "local.png"
    image_path.write_bytes(_png(mode="RGBA", color=(0, 0, 255, 0)))
    table = tmp_path / "pairs.csv"
    table.write_text(f"image_url,text,label\n{image_path},a transparent square,3\nfile://{image_path},again,4\n")
    records = read_pairs_table(table, url_column="image_url", caption_column="text")
    stats = download_table(records, tmp_path / "out", DownloadOptions(background=(255, 255, 255)))
    assert stats["stored"] == 2
    samples = read_samples(tmp_path / "out" / "samples.tsv")
    assert [s["label"] for s in samples] == ["3", "4"]
    with Image.open(samples[0]["image"]) as image:
        # Fully transparent pixels land on the white background.
        assert image.getpixel((5, 5)) == pytest.approx((255, 255, 255), abs=3)


def test_missing_table_column_is_named(tmp_path):
    table = tmp_path / "pairs.tsv"
    table.write_text("url\tcaption\n/x.png\thello\n")
    with pytest.raises(ValueError, match="'text'"):
        read_pairs_table(table, caption_column="text")
