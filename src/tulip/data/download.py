"""Fetch the images of a pairs table (http(s) URLs or local paths) into a folder of normalised JPEGs.

Every row ends either as ``images/<key>.jpg`` plus a line in ``samples.tsv``, or as a counted skip
with its reason in ``stats.json``. ``samples.tsv`` is written last and atomically, so its presence
means the download finished.
"""

from __future__ import annotations

import io
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from tulip.data.io import atomic_write_bytes, atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

USER_AGENT = "tulip-downloader/0.1 (+https://github.com/tulip)"


@dataclass
class DownloadOptions:
    timeout_s: float = 10.0
    retries: int = 2
    backoff_s: float = 0.5
    threads: int = 8
    min_size: int = 8  # shorter side in pixels below which an image is skipped
    max_pixels: int = 64_000_000  # decompression-bomb guard
    resize_shorter: int | None = None  # resize so the shorter side is this many pixels; None keeps the size
    jpeg_quality: int = 95
    background: tuple[int, int, int] = (255, 255, 255)  # colour behind transparent pixels
    max_caption_chars: int = 1000


@dataclass
class FetchResult:
    key: str
    record: dict
    reason: str | None = None  # None when the image was stored
    detail: str = ""
    image_path: str | None = None
    size: tuple[int, int] | None = field(default=None)


class SkipSample(Exception):
    """A row that cannot become a sample; ``reason`` is its bucket in the statistics."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _read_source(url: str, options: DownloadOptions) -> bytes:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("http", "https"):
        return _http_get(url, options)
    path = Path(urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else url)
    if not path.is_file():
        raise SkipSample("missing_file", str(path))
    return path.read_bytes()


def _http_get(url: str, options: DownloadOptions) -> bytes:
    last_error: SkipSample | None = None
    for attempt in range(options.retries + 1):
        if attempt:
            time.sleep(options.backoff_s * 2 ** (attempt - 1))
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=options.timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            last_error = SkipSample(f"http_{error.code}", url)
            if error.code < 500 and error.code != 429:
                break  # a client error will not change on retry
        except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as error:
            reason = "timeout" if "timed out" in str(error) else "network_error"
            last_error = SkipSample(reason, f"{url}: {error}")
    assert last_error is not None
    raise last_error


def normalise_image(data: bytes, options: DownloadOptions) -> tuple[bytes, tuple[int, int]]:
    """Decode image bytes, apply EXIF orientation, convert to RGB and re-encode as JPEG; return (bytes, size)."""
    if not data:
        raise SkipSample("empty_file")
    Image.MAX_IMAGE_PIXELS = options.max_pixels
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = ImageOps.exif_transpose(image)
            image.load()
    except Image.DecompressionBombError as error:
        raise SkipSample("too_large", str(error)) from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise SkipSample("decode_error", str(error)) from error
    if min(image.size) < options.min_size:
        raise SkipSample("too_small", f"{image.size[0]}x{image.size[1]}")
    image = to_rgb(image, options.background)
    if options.resize_shorter and min(image.size) != options.resize_shorter:
        scale = options.resize_shorter / min(image.size)
        size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=options.jpeg_quality)
    return buffer.getvalue(), image.size


def to_rgb(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Convert any PIL mode to RGB, compositing transparent pixels onto ``background``."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGBA")
        canvas = Image.new("RGB", image.size, background)
        canvas.paste(image, mask=image.getchannel("A"))
        return canvas
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit and 32-bit integer grayscale: scale to 8 bits instead of clipping.
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        peak = array.max() or 1.0
        image = Image.fromarray((array * (255.0 / max(peak, 255.0))).clip(0, 255).astype("uint8"), mode="L")
    return image.convert("RGB")


def clean_caption(caption: object, max_chars: int) -> str:
    if caption is None:
        raise SkipSample("missing_caption")
    text = " ".join(str(caption).split())
    if not text:
        raise SkipSample("empty_caption")
    return text[:max_chars]


def fetch_one(key: str, record: dict, image_dir: Path, options: DownloadOptions) -> FetchResult:
    try:
        caption = clean_caption(record.get("caption"), options.max_caption_chars)
        url = record.get("url")
        if not url or not str(url).strip():
            raise SkipSample("missing_url")
        data, size = normalise_image(_read_source(str(url).strip(), options), options)
        path = image_dir / f"{key}.jpg"
        atomic_write_bytes(path, data)
        return FetchResult(key, {**record, "caption": caption}, image_path=path.name, size=size)
    except SkipSample as skip:
        return FetchResult(key, record, reason=skip.reason, detail=skip.detail)


def download_table(records: list[dict], out_dir: str | Path, options: DownloadOptions | None = None) -> dict:
    """Fetch every record into ``out_dir/images`` and write ``samples.tsv`` and ``stats.json``; return the stats."""
    options = options or DownloadOptions()
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    keys = [f"{index:09d}" for index in range(len(records))]
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=options.threads) as pool:
        results = list(pool.map(lambda kr: fetch_one(kr[0], kr[1], image_dir, options), zip(keys, records)))

    skipped = Counter(r.reason for r in results if r.reason)
    extra_columns = sorted({k for r in results if not r.reason for k in r.record} - {"url", "caption"})
    lines = ["\t".join(["key", "image", "caption", "url", *extra_columns])]
    for result in results:
        if result.reason:
            continue
        row = [result.key, f"images/{result.image_path}", result.record["caption"], str(result.record["url"])]
        row += [str(result.record.get(column, "")) for column in extra_columns]
        lines.append("\t".join(value.replace("\t", " ").replace("\n", " ") for value in row))
    skip_log = [
        {"key": r.key, "url": str(r.record.get("url")), "reason": r.reason, "detail": r.detail}
        for r in results
        if r.reason
    ]
    stats = {
        "rows": len(records),
        "stored": len(results) - sum(skipped.values()),
        "skipped": dict(sorted(skipped.items())),
        "seconds": round(time.monotonic() - start, 2),
    }
    atomic_write_json(out_dir / "skipped.json", skip_log)
    atomic_write_json(out_dir / "stats.json", stats)
    atomic_write_text(out_dir / "samples.tsv", "\n".join(lines) + "\n")
    for reason, count in stats["skipped"].items():
        logger.warning("skipped %d row(s): %s", count, reason)
    logger.info("stored %d of %d rows in %.1f s", stats["stored"], stats["rows"], stats["seconds"])
    return stats


def read_samples(path: str | Path) -> list[dict]:
    """Read a ``samples.tsv`` written by :func:`download_table`; image paths become absolute."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    samples = []
    for line in lines[1:]:
        row = dict(zip(header, line.split("\t")))
        row["image"] = str((path.parent / row["image"]).resolve())
        samples.append(row)
    return samples
