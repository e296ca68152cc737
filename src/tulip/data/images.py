"""Decode downloaded image bytes and normalise them: EXIF orientation, RGB, optional resize, JPEG.

Every failure raises :class:`~tulip.data.stats.SkipSample` with its bucket, so a caller can count
it and move on. Only the formats in ``ImageOptions.formats`` are opened: PIL also reads formats
such as EPS that start external programs, which a downloader of web images must not do.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageOps, UnidentifiedImageError

from tulip.data.stats import SkipSample

Image.init()  # register every format plugin, so that the allow-list below can name any of them

RESIZE_MODES = ("none", "shorter", "longer")
DEFAULT_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG covers multi-picture (MPO) files

# EXIF orientations 5-8 rotate by 90 or 270 degrees, so width and height swap on display.
_ORIENTATION_TAG = 0x0112
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}
# No image format starts with "<" or "{"; HTML, XML, SVG and JSON documents do.
_MARKUP_PREFIXES = (b"<", b"{")


@dataclass(frozen=True)
class ImageOptions:
    min_size: int = 8  # shorter side in pixels below which an image is skipped
    max_pixels: int = 64_000_000  # width x height above which an image is skipped before decoding
    resize_mode: str = "none"  # "shorter" or "longer" side scaled to resize_size, or "none"
    resize_size: int | None = None  # pixels; required unless resize_mode is "none"
    upscale: bool = False  # whether smaller images are enlarged to resize_size
    jpeg_quality: int = 95
    background: tuple[int, int, int] = (255, 255, 255)  # RGB colour behind transparent pixels
    formats: tuple[str, ...] = DEFAULT_FORMATS  # PIL format names that may be opened

    def __post_init__(self):
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode {self.resize_mode!r} is invalid; use one of {list(RESIZE_MODES)}")
        if self.resize_mode != "none" and not (self.resize_size and self.resize_size > 0):
            raise ValueError(f"resize_mode {self.resize_mode!r} needs a positive resize_size, got {self.resize_size}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        unknown = [f for f in self.formats if f not in Image.OPEN]
        if unknown:
            raise ValueError(f"unknown image format(s) {unknown}; PIL can open {sorted(Image.OPEN)}")
        if len(self.background) != 3 or not all(0 <= c <= 255 for c in self.background):
            raise ValueError(f"background must be three integers in [0, 255], got {self.background}")


@dataclass(frozen=True)
class NormalisedImage:
    data: bytes  # JPEG bytes
    size: tuple[int, int]  # stored (width, height)
    original_size: tuple[int, int]  # (width, height) after EXIF orientation, before resizing
    original_mode: str  # PIL mode of the source, e.g. "CMYK" or "I;16"
    original_format: str  # PIL format name of the source


def looks_like_markup(data: bytes) -> bool:
    """Return whether ``data`` starts like an HTML, XML or JSON document (an error page served as an image)."""
    head = data[:64].lstrip().lower()
    return head.startswith(_MARKUP_PREFIXES)


def _open(data: bytes, options: ImageOptions, content_type: str | None) -> Image.Image:
    if not data:
        raise SkipSample("empty_file")
    try:
        return Image.open(io.BytesIO(data), formats=list(options.formats))
    except UnidentifiedImageError as error:
        if looks_like_markup(data) or (content_type or "").startswith(("text/", "application/json")):
            raise SkipSample("not_an_image", f"content type {content_type or 'unknown'}") from error
        try:
            with Image.open(io.BytesIO(data)) as image:  # identify only; nothing is decoded
                raise SkipSample("unsupported_format", f"{image.format} is not in {list(options.formats)}") from error
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            pass
        raise SkipSample("decode_error", str(error)) from error
    except Image.DecompressionBombError as error:
        raise SkipSample("too_large", str(error)) from error
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise SkipSample("decode_error", f"{type(error).__name__}: {error}") from error


def _target_size(size: tuple[int, int], options: ImageOptions) -> tuple[int, int]:
    """Return the stored size for an image of ``size`` (width, height) under the resize options."""
    if options.resize_mode == "none":
        return size
    side = min(size) if options.resize_mode == "shorter" else max(size)
    scale = options.resize_size / side
    if scale >= 1.0 and not options.upscale:
        return size
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _decode(image: Image.Image, target: tuple[int, int], swapped: bool) -> Image.Image:
    """Load the pixels (at reduced JPEG scale when that still covers ``target``) and apply EXIF orientation."""
    if image.format in ("JPEG", "MPO") and target != image.size:
        # libjpeg decodes at 1/2, 1/4 or 1/8 scale directly, never below the requested size.
        image.draft(None, (target[1], target[0]) if swapped else target)
    try:
        return ImageOps.exif_transpose(image)
    except MemoryError:
        raise
    except Image.DecompressionBombError as error:
        raise SkipSample("too_large", str(error)) from error
    except OSError as error:
        if "truncated" in str(error).lower():
            raise SkipSample("truncated", str(error)) from error
        raise SkipSample("decode_error", f"{type(error).__name__}: {error}") from error
    except Exception as error:  # noqa: BLE001 - malformed files raise many exception types inside PIL
        raise SkipSample("decode_error", f"{type(error).__name__}: {error}") from error


def to_rgb(image: Image.Image, background: tuple[int, int, int], plain_cmyk_jpeg: bool = False) -> Image.Image:
    """Convert any PIL mode to RGB.

    Transparent pixels are composited onto ``background``; 16-bit and 32-bit grayscale is scaled to
    8 bits. ``plain_cmyk_jpeg`` marks a CMYK JPEG without Adobe's APP14 marker: PIL decodes every
    CMYK JPEG as Adobe-inverted, so such an image is inverted back first.
    """
    if image.mode == "CMYK" and plain_cmyk_jpeg:
        image = ImageChops.invert(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        image = image.convert("RGBA")
        canvas = Image.new("RGB", image.size, tuple(background))
        canvas.paste(image, mask=image.getchannel("A"))
        return canvas
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        image = Image.fromarray(_to_uint8(np.asarray(image), image.mode), mode="L")
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise SkipSample("decode_error", f"cannot convert mode {image.mode} to RGB: {error}") from error


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Map 16-bit, 32-bit integer or float grayscale pixels to 0..255.

    "I;16" pixels span 0..65535. Modes "I" and "F" carry no range, so it is read from the values:
    floats up to 1.0 are taken as 0..1, and values above 255 as 16-bit.
    """
    peak = float(values.max()) if values.size else 0.0
    values = values.astype(np.float64)
    if mode.startswith("I;16") or peak > 255.0:
        values = values / 257.0
    elif mode == "F" and peak <= 1.0:
        values = values * 255.0
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def normalise_image(data: bytes, options: ImageOptions, content_type: str | None = None) -> NormalisedImage:
    """Decode image bytes, apply EXIF orientation, convert to RGB, resize and re-encode as JPEG.

    Raises:
        SkipSample: with the reason the bytes cannot become a stored image.
    """
    with _open(data, options, content_type) as image:
        source_format, source_mode = image.format or "unknown", image.mode
        width, height = image.size
        if width * height > options.max_pixels:
            raise SkipSample("too_large", f"{width}x{height} is more than {options.max_pixels} pixels")
        swapped = image.getexif().get(_ORIENTATION_TAG) in _SWAPPING_ORIENTATIONS
        original_size = (height, width) if swapped else (width, height)
        if min(original_size) < options.min_size:
            raise SkipSample("too_small", f"{original_size[0]}x{original_size[1]}")
        plain_cmyk = source_mode == "CMYK" and source_format in ("JPEG", "MPO") and "adobe" not in image.info
        target = _target_size(original_size, options)
        decoded = _decode(image, target, swapped)
    rgb = to_rgb(decoded, options.background, plain_cmyk_jpeg=plain_cmyk)
    if rgb.size != target:
        rgb = rgb.resize(target, Image.Resampling.BICUBIC, reducing_gap=3.0)
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=options.jpeg_quality)
    return NormalisedImage(buffer.getvalue(), rgb.size, original_size, source_mode, source_format)
