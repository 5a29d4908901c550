"""Image and video input: everything becomes a BGR uint8 HxWx3 array or a clear InputError."""
from __future__ import annotations

import io
import os
import queue
import threading
import warnings
from collections.abc import Generator, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ferlib.errors import InputError

MAX_SIDE = 16384
"""Largest accepted image side in pixels (checked from the header, before decoding)."""
MAX_PIXELS = 100_000_000
"""Largest accepted image area in pixels (checked from the header, before decoding)."""

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".y4m"})


def _name(src) -> str:
    return f"<{len(src)} bytes>" if isinstance(src, (bytes, bytearray, memoryview)) else str(src)


def _read_source(src) -> bytes:
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    elif isinstance(src, (str, os.PathLike)):
        p = Path(src)
        if not p.exists():
            raise InputError(f"image {p}: no such file")
        if not p.is_file():
            raise InputError(f"image {p}: not a regular file")
        try:
            data = p.read_bytes()
        except OSError as e:
            raise InputError(f"image {p}: cannot read ({e.strerror or e})") from None
    else:
        raise InputError(f"image source must be a path or bytes, got {type(src).__name__}")
    if not data:
        raise InputError(f"image {_name(src)}: empty (zero bytes)")
    return data


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.integer):
        # 16-bit data (possibly held in 32-bit ints): scale the 0..65535 range down.
        top = 65535.0 if a.max(initial=0) > 255 or a.dtype.itemsize == 2 else 255.0
        return np.clip(a.astype(np.float64) * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
    a = a.astype(np.float64)
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    scale = 255.0 if a.max(initial=0.0) <= 1.0 else 1.0
    return np.clip(a * scale + 0.5, 0, 255).astype(np.uint8)


def ensure_bgr(img, rgb: bool = False, name: str = "image") -> np.ndarray:
    """Any HxW / HxWx1 / HxWx3 / HxWx4 array (uint8, 16-bit or float) -> contiguous BGR uint8 HxWx3.

    `rgb=True` says a 3/4-channel input is RGB(A) rather than BGR(A). Alpha is dropped.
    """
    if not isinstance(img, np.ndarray):
        raise InputError(f"{name}: expected a numpy array, got {type(img).__name__}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise InputError(f"{name}: expected HxW, HxWx3 or HxWx4, got shape {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise InputError(f"{name}: empty image of shape {img.shape}")
    if not (np.issubdtype(img.dtype, np.number) or img.dtype == np.bool_):
        raise InputError(f"{name}: unsupported dtype {img.dtype}")
    img = _to_uint8(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    else:
        img = img[:, :, :3]
        if rgb:
            img = img[:, :, ::-1]
    return np.ascontiguousarray(img)


def image_size(src) -> tuple[int, int]:
    """(width, height) from the header only."""
    data = _read_source(src)
    with _open(data, _name(src)) as im:
        return im.size


def _open(data: bytes, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise InputError(f"image {name}: too large ({e})") from None
    except UnidentifiedImageError:
        raise InputError(f"image {name}: not an image file (format not recognised)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(f"image {name}: unreadable header ({e})") from None
    w, h = im.size
    if w <= 0 or h <= 0:
        raise InputError(f"image {name}: invalid size {w}x{h}")
    if max(w, h) > MAX_SIDE or w * h > MAX_PIXELS:
        raise InputError(f"image {name}: {w}x{h} exceeds the limit of {MAX_SIDE} px per side "
                         f"and {MAX_PIXELS // 1_000_000} MP")
    return im


def load_image(src) -> np.ndarray:
    """Read an image file or its bytes -> BGR uint8 HxWx3 (EXIF orientation applied).

    Handles JPEG, PNG, TIFF, BMP, WebP, GIF (first frame); greyscale, RGBA (composited on white),
    16-bit and palette images. Raises InputError naming the input and the reason.
    """
    name = _name(src)
    data = _read_source(src)
    im = _open(data, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                return ensure_bgr(np.asarray(im), name=name)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, rgba)
            rgb = np.asarray(im.convert("RGB"))
    except Image.DecompressionBombError as e:
        raise InputError(f"image {name}: too large ({e})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        return _cv2_fallback(data, name, e)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _cv2_fallback(data: bytes, name: str, err: Exception) -> np.ndarray:
    # Pillow cannot decode e.g. 16-bit-per-channel colour TIFFs; OpenCV can.
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise InputError(f"image {name}: corrupt or truncated ({err})")
    return ensure_bgr(arr, name=name)


def is_video(path) -> bool:
    """True when the file name has a video extension."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def is_image(path) -> bool:
    """True when the file name has an image extension."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def iter_images(folder) -> Iterator[Path]:
    """Image files under `folder` (recursive), sorted by path."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"image folder {root}: not a directory")
    yield from sorted(p for p in root.rglob("*") if p.is_file() and is_image(p))


def iter_video(path, max_frames: int | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
    """Decode a video file with PyAV -> (frame index, timestamp in ms, BGR uint8 frame).

    Raises InputError for a missing, unreadable or empty video (no decodable frame), or when
    decoding fails part-way (after yielding the frames before the failure).
    """
    import av

    p = Path(path)
    if not p.is_file():
        raise InputError(f"video {p}: no such file")
    if p.stat().st_size == 0:
        raise InputError(f"video {p}: empty (zero bytes)")
    try:
        container = av.open(str(p))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise InputError(f"video {p}: cannot open ({e})") from None
    n = 0
    try:
        if not container.streams.video:
            raise InputError(f"video {p}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 30)
        try:
            for frame in container.decode(stream):
                if max_frames is not None and n >= max_frames:
                    break
                ts = frame.time * 1000.0 if frame.time is not None else n * 1000.0 / fps
                yield n, float(ts), frame.to_ndarray(format="bgr24")
                n += 1
        except (av.FFmpegError, OSError, ValueError) as e:
            raise InputError(f"video {p}: decoding failed after {n} frames ({e})") from None
        if n == 0 and max_frames != 0:
            raise InputError(f"video {p}: contains no decodable frame")
    finally:
        container.close()


_DONE = object()


def prefetch(items: Iterator, depth: int = 4) -> Generator:
    """`items` produced by a background thread up to `depth` ahead (video decoding overlaps the
    consumer's work on another core); the producer's exception is raised where it happened in the
    sequence, and closing the generator stops the producer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(x) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for x in items:
                if not put((x, None)):
                    return
            put((_DONE, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put((_DONE, e))
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # e.g. iter_video's container, closed in this thread
                close()

    worker = threading.Thread(target=produce, name="ferlib-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            x, err = q.get()
            if x is _DONE:
                if err is not None:
                    raise err
                return
            yield x
    finally:
        stop.set()
        worker.join(timeout=5)
