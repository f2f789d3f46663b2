"""Safe image decoding shared by the gateway (validation) and the workers (inference).

Only raster formats are accepted. Decoding runs under a pixel limit, so a
decompression bomb is refused before it is expanded in memory. The first frame of an
animation is used, EXIF orientation is applied, and every mode (CMYK, 16-bit, palette,
alpha) is converted to 8-bit RGB.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC/AVIF if the optional plugin is installed.
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - optional
    pass

ACCEPTED_FORMATS = frozenset(
    {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO", "HEIF", "AVIF", "PPM", "TGA"}
)
DEFAULT_MAX_PIXELS = 50_000_000


class ImageDecodeError(ValueError):
    """The bytes are not an image this service can read; the message says why."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    mode: str
    frames: int
    content_type: str


def _check_header(data: bytes) -> None:
    if not data:
        raise ImageDecodeError("the file is empty (0 bytes)")
    head = data[:512].lstrip().lower()
    if head.startswith((b"<?xml", b"<svg", b"<!doctype", b"<html")):
        raise ImageDecodeError("SVG, XML and HTML are not raster images; send JPEG, PNG or WebP")


def _open(data: bytes, max_pixels: int) -> Image.Image:
    _check_header(data)
    previous = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max_pixels
            image = Image.open(io.BytesIO(data))
            if image.format not in ACCEPTED_FORMATS:
                raise ImageDecodeError(
                    f"format {image.format} is not accepted; send JPEG, PNG, WebP, GIF, BMP or TIFF"
                )
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(
                    f"image is {width}x{height} = {width * height} pixels, over the limit "
                    f"of {max_pixels}; downscale it before sending"
                )
            return image
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"image is too large to decode safely: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not an image, or an image format that cannot be read") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(f"image is truncated or corrupt (header unreadable: {exc})") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous


#: Modes whose conversion to RGB cannot fail once the pixels decode.
_PLAIN_MODES = frozenset({"RGB", "RGBA", "L", "LA", "P", "1"})


def inspect_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Validate ``data`` fully (header and pixel data) and describe it."""
    image = _open(data, max_pixels)
    fmt = str(image.format)
    frames = int(getattr(image, "n_frames", 1) or 1)
    content_type = Image.MIME.get(fmt, "application/octet-stream")
    if image.mode in _PLAIN_MODES:
        with _pixel_errors():
            image.load()  # decodes the pixels: catches truncation
    else:
        to_rgb(image, max_pixels=max_pixels)  # also proves the conversion works
    return ImageInfo(fmt, image.width, image.height, image.mode, frames, content_type)


@contextlib.contextmanager
def _pixel_errors() -> Iterator[None]:
    """Decoding pixels: a decompression-bomb warning, truncation or corruption becomes an
    :class:`ImageDecodeError`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"image is too large to decode safely: {exc}") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageDecodeError(f"image data is truncated or corrupt: {exc}") from exc


def to_rgb(image: Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """First frame, EXIF orientation applied, 8-bit RGB (alpha composited on white)."""
    with _pixel_errors():
        image.seek(0)
        image.load()
        frame = ImageOps.exif_transpose(image) or image
        mode = frame.mode
        if mode in ("I;16", "I;16B", "I;16L", "I"):
            frame = frame.point(lambda v: v / 256).convert("L")
        elif mode == "F":
            frame = frame.convert("L")
        if frame.mode == "P":
            frame = frame.convert("RGBA")
        if frame.mode in ("RGBA", "LA", "PA"):
            rgba = frame.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            frame = Image.alpha_composite(background, rgba)
        return frame.convert("RGB")


def decode_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``data`` to an RGB image, or raise :class:`ImageDecodeError`."""
    return to_rgb(_open(data, max_pixels), max_pixels=max_pixels)
