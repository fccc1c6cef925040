"""Images: the one decoder every stage uses (dataset cleaning, downloads, predict, the web app), the
policy it applies, and the file extensions taken for images."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from .files import IMAGE_EXTS, NotRegular, read_regular  # IMAGE_EXTS: the extensions taken for images
from .reasons import Reason

__all__ = ["IMAGE_EXTS", "DecodePolicy", "ACCEPT", "clean_one"]



@dataclass(frozen=True)
class DecodePolicy:
    """What a decoded image must be, and how it is normalised (a recipe's DatasetSpec has the same fields)."""
    min_size: int = 8
    max_pixels: int = 89_478_485
    max_side: int = 0
    formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
    background: tuple[int, int, int] = (255, 255, 255)
    center_crop: float = 1.0


# what predict and the web app accept: any decodable still image of at least 8 px
ACCEPT = DecodePolicy(min_size=8, formats=("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"))


def _to_rgb(im, background):
    """Any PIL mode to 8-bit RGB; transparency is composited on `background`."""
    import numpy as np
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = (0.0, 65535.0) if im.mode.startswith("I;16") else (float(arr.min()), float(arr.max()))
        arr = np.clip((arr - lo) * 255.0 / max(hi - lo, 1e-12), 0, 255).astype(np.uint8)
        im = Image.fromarray(arr, "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")


def _bomb_warnings_are_errors() -> None:
    """Make PIL's DecompressionBombWarning an exception, process-wide, unless it already is. A
    catch_warnings() block per call is not thread-safe (it swaps the global filter list): with decoding
    in worker threads the warning leaked onto the terminal in the middle of the progress line."""
    from PIL import Image

    if not any(f[0] == "error" and f[2] is Image.DecompressionBombWarning for f in warnings.filters):
        warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def clean_one(raw: Path | bytes, spec: DecodePolicy) -> tuple[str, str, object | None]:
    """Decode one file (or its bytes): (reason, detail, RGB image) where reason is "" when it is kept."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        data = raw if isinstance(raw, bytes) else read_regular(raw)
    except NotRegular as e:
        return e.reason, e.detail, None
    except OSError as e:
        return Reason.UNREADABLE, e.strerror or str(e), None
    if not data:
        return Reason.EMPTY_FILE, "0 bytes", None
    _bomb_warnings_are_errors()
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return Reason.NOT_AN_IMAGE, "no known image format", None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return Reason.DECOMPRESSION_BOMB, str(e).split(".")[0], None
    except (OSError, SyntaxError, ValueError) as e:
        return Reason.CORRUPT, str(e), None
    w, h = im.size
    if w * h > spec.max_pixels:
        return Reason.DECOMPRESSION_BOMB, f"{w}x{h} = {w * h} pixels > max_pixels {spec.max_pixels}", None
    if getattr(im, "is_animated", False) or getattr(im, "n_frames", 1) > 1:
        return Reason.ANIMATED, f"{im.format} with {getattr(im, 'n_frames', '?')} frames", None
    if im.format not in spec.formats:
        return Reason.FORMAT_NOT_ALLOWED, f"{im.format} (allowed: {', '.join(spec.formats)})", None
    try:
        im.load()  # the full decode: truncated and corrupt files fail here, not at training time
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return Reason.DECOMPRESSION_BOMB, str(e).split(".")[0], None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        return Reason.TRUNCATED_OR_CORRUPT, str(e), None
    if min(w, h) < spec.min_size:
        return Reason.TOO_SMALL, f"{w}x{h}, min_size is {spec.min_size}", None
    try:
        im = ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError) as e:
        return Reason.CORRUPT_EXIF, str(e), None
    im = _to_rgb(im, spec.background)
    if spec.center_crop < 1.0:  # the same crop for every class, e.g. so web photos look like LFW's face crops
        side = max(1, round(min(im.size) * spec.center_crop))
        left, top = (im.width - side) // 2, (im.height - side) // 2
        im = im.crop((left, top, left + side, top + side))
    if spec.max_side and max(im.size) > spec.max_side:
        im.thumbnail((spec.max_side, spec.max_side), Image.Resampling.LANCZOS)
    return "", "", im
