"""Images: the one decoder every stage uses (dataset cleaning, downloads, predict, the web app), the
policy it applies, and the file extensions taken for images."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import ImageRefused
from .files import IMAGE_EXTS, NotRegular, read_regular  # IMAGE_EXTS: the extensions taken for images
from .reasons import Reason

__all__ = [
    "IMAGE_EXTS",
    "DecodePolicy",
    "ACCEPT",
    "clean_one",
    "clean_with_boxes",
    "decoded",
    "transpose_boxes",
    "load_accepted",
    "prefetched",
]


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
    reason, detail, im, _ = clean_with_boxes(raw, spec, None)
    return reason, detail, im


def decoded(raw: Path | bytes, spec: DecodePolicy = ACCEPT) -> tuple[object | None, str]:
    """(the fully decoded image in its stored mode, "") or (None, "reason: detail"): every check the
    dataset's decoder makes (size limits before decoding, format, truncation), for files the program
    uses as they are (composite cut-outs and backgrounds)."""
    try:
        return _decoded(raw, spec), ""
    except _Refused as e:
        reason, detail = e.args
        return None, f"{reason}: {detail}"


# EXIF orientation -> the PIL transpose that ImageOps.exif_transpose applies for it
_ORIENTATION = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}


def transpose_boxes(boxes, method: str, w: int, h: int):
    """Boxes (x0, y0, x1, y1 in pixel-edge coordinates of a w x h image) after PIL's Image.transpose(method)."""
    import numpy as np

    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = b.T
    if method == "FLIP_LEFT_RIGHT":
        out = (w - x1, y0, w - x0, y1)
    elif method == "FLIP_TOP_BOTTOM":
        out = (x0, h - y1, x1, h - y0)
    elif method == "ROTATE_180":
        out = (w - x1, h - y1, w - x0, h - y0)
    elif method == "ROTATE_90":  # counter-clockwise: (x, y) -> (y, w - x)
        out = (y0, w - x1, y1, w - x0)
    elif method == "ROTATE_270":  # clockwise: (x, y) -> (h - y, x)
        out = (h - y1, x0, h - y0, x1)
    elif method == "TRANSPOSE":  # (x, y) -> (y, x)
        out = (y0, x0, y1, x1)
    elif method == "TRANSVERSE":  # (x, y) -> (h - y, w - x)
        out = (h - y1, w - x1, h - y0, w - x0)
    else:
        raise ValueError(f"unknown transpose {method!r}")
    return np.stack(out, axis=1)


class _Refused(Exception):
    """An input the decoder refuses: (reason, detail)."""


def _check_header(im, spec: DecodePolicy) -> None:
    """What the header tells before any pixel is decoded: the pixel count, one frame, an allowed format."""
    w, h = im.size
    if w * h > spec.max_pixels:
        raise _Refused(Reason.DECOMPRESSION_BOMB, f"{w}x{h} = {w * h} pixels > max_pixels {spec.max_pixels}")
    if getattr(im, "is_animated", False) or getattr(im, "n_frames", 1) > 1:
        raise _Refused(Reason.ANIMATED, f"{im.format} with {getattr(im, 'n_frames', '?')} frames")
    if im.format not in spec.formats:
        raise _Refused(Reason.FORMAT_NOT_ALLOWED, f"{im.format} (allowed: {', '.join(spec.formats)})")


def _decoded(raw: Path | bytes, spec: DecodePolicy):
    """The fully decoded Pillow image of a file or its bytes, every check before and after decoding."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = raw if isinstance(raw, bytes) else read_regular(raw)
    except NotRegular as e:
        raise _Refused(e.reason, e.detail) from None
    except OSError as e:
        raise _Refused(Reason.UNREADABLE, e.strerror or str(e)) from None
    if not data:
        raise _Refused(Reason.EMPTY_FILE, "0 bytes")
    _bomb_warnings_are_errors()
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise _Refused(Reason.NOT_AN_IMAGE, "no known image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _Refused(Reason.DECOMPRESSION_BOMB, str(e).split(".")[0]) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise _Refused(Reason.CORRUPT, str(e)) from None
    _check_header(im, spec)
    w, h = im.size
    try:
        im.load()  # the full decode: truncated and corrupt files fail here, not at training time
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _Refused(Reason.DECOMPRESSION_BOMB, str(e).split(".")[0]) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise _Refused(Reason.TRUNCATED_OR_CORRUPT, str(e)) from None
    if min(w, h) < spec.min_size:
        raise _Refused(Reason.TOO_SMALL, f"{w}x{h}, min_size is {spec.min_size}")
    return im


def _oriented(im, b):
    """ImageOps.exif_transpose's own steps, so that the boxes can take the same ones."""
    from PIL import Image

    try:
        method = _ORIENTATION.get(im.getexif().get(0x0112, 1))
        if method:
            if b is not None:
                b = transpose_boxes(b, method, im.width, im.height)
            im = im.transpose(getattr(Image.Transpose, method))
    except (OSError, SyntaxError, ValueError, KeyError, TypeError) as e:
        raise _Refused(Reason.CORRUPT_EXIF, str(e)) from None
    return im, b


def clean_with_boxes(raw: Path | bytes, spec: DecodePolicy, boxes=None) -> tuple[str, str, object | None, object]:
    """`clean_one`, moving `boxes` (N x 4 x0 y0 x1 y1, pixels of the file as stored) with the pixels
    through every geometric step (EXIF orientation, centre crop, max_side): (reason, detail, image, boxes)
    with the boxes in the cleaned image's pixels (clipped to it by the crop; None when none were given)."""
    import numpy as np
    from PIL import Image

    try:
        im = _decoded(raw, spec)
        b = None if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        im, b = _oriented(im, b)
    except _Refused as e:
        return e.args[0], e.args[1], None, None
    im = _to_rgb(im, spec.background)
    if spec.center_crop < 1.0:  # the same crop for every class, e.g. so web photos look like LFW's face crops
        side = max(1, round(min(im.size) * spec.center_crop))
        left, top = (im.width - side) // 2, (im.height - side) // 2
        im = im.crop((left, top, left + side, top + side))
        if b is not None:
            b = np.clip(b - [left, top, left, top], 0, side)
    if spec.max_side and max(im.size) > spec.max_side:
        w0, h0 = im.size
        im.thumbnail((spec.max_side, spec.max_side), Image.Resampling.LANCZOS)
        if b is not None:
            b = b * [im.width / w0, im.height / h0, im.width / w0, im.height / h0]
    return "", "", im, b


def load_accepted(path: Path) -> tuple[str, object | None]:
    """(error, image) for one file given to predict: "missing" when there is no such file, the decoder's
    reason when it is not a usable image (ACCEPT), else "" and the RGB image."""
    import os

    if not os.path.lexists(path):
        return "missing: no such file", None
    reason, detail, im = clean_one(path, ACCEPT)  # regular files only, a bounded read: never blocks on a pipe
    return (f"{reason}: {detail}", None) if reason else ("", im)


def prefetched(paths: list[Path], prepare, bs: int, workers: int):
    """Batches of `paths`, each file decoded (load_accepted) and turned into `prepare(image)` in worker
    threads, the next batch while the caller runs its model on this one (memory holds at most two batches).
    Yields (indices, prepared values, [(index, error)]) per batch."""
    from concurrent.futures import ThreadPoolExecutor

    def one(path):
        err, im = load_accepted(path)
        if err:
            return err, None
        try:
            return "", prepare(im)
        except ImageRefused as e:  # e.g. no face found, for a model trained on face crops
            return str(e), None

    chunks = [range(s, min(s + bs, len(paths))) for s in range(0, len(paths), bs)]
    with ThreadPoolExecutor(max(1, workers)) as pool:

        def submit(chunk):
            return [(i, pool.submit(one, paths[i])) for i in chunk]

        pending = submit(chunks[0]) if chunks else []
        for k in range(len(chunks)):
            current, pending = pending, submit(chunks[k + 1]) if k + 1 < len(chunks) else []
            good, values, errors = [], [], []
            for i, fut in current:
                err, value = fut.result()
                if err:
                    errors.append((i, err))
                else:
                    good.append(i)
                    values.append(value)
            yield good, values, errors
