"""Decode image files to uint8 C x H x W tensors with a data set's channels and size.

JPEG and PNG go through torchvision's libjpeg/libpng decoders (about four times
faster than PIL on small images); every other format, and any file torchvision
refuses, goes through PIL, which also names the problem when a file is corrupt.
Alpha is dropped rather than composited: torchvision's RGB mode drops it, and
doing the same in PIL makes a file decode identically whichever decoder reads it.
EXIF orientation is ignored by both, for the same reason.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torchvision.io
import torchvision.transforms.v2.functional as F
from PIL import Image, UnidentifiedImageError

from convscope.console import Stage
from convscope.errors import UserError

SUPPORTED_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

# A truncated file must fail rather than decode half grey.
Image.LOAD_TRUNCATED_IMAGES = False

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# PIL modes without colour; every other mode (RGB, RGBA, P, CMYK, YCbCr, ...) counts as colour.
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# Modes holding more than 8 bits per sample, scaled down rather than clipped (PIL's convert clips).
_WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)
# torchvision 0.29 deprecates its image codecs in favour of TorchCodec, which is not a dependency.
_TORCHVISION_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"

# How an image of another shape is brought to the data set's size (data.resize): "crop" scales it to cover the size
# and crops the centre, "squash" scales each side to it (the aspect ratio changes), "pad" scales it to fit inside and
# pads the rest with black.
# The default size of a folder of files is their most common size, scaled down (aspect kept) so that its longer side
# is at most this: a folder of camera photographs would otherwise fill the memory and take hours per epoch.
MAX_DEFAULT_SIDE = 256

_CHUNK = 256  # files per thread-pool task: amortises the per-task overhead on tiny images
_MAX_WORKERS = 8

T = TypeVar("T")


@dataclass(frozen=True)
class ImageInfo:
    """What a file's header says, read without decoding its pixels."""

    colour: bool
    size: tuple[int, int]  # (height, width)


@dataclass
class DecodedImages:
    """The images of many files brought to one channel count and size."""

    images: torch.Tensor  # N x C x H x W uint8, one per kept file
    kept: list[int]  # indices into the input paths, in order
    skipped: list[Path]  # files that could not be decoded (only with skip_bad)


def probe_image(path: Path) -> ImageInfo:
    """Whether ``path`` is a colour image and its size, from the header alone."""
    try:
        with Image.open(path) as img:
            return ImageInfo(colour=img.mode not in _GREY_MODES, size=(img.height, img.width))
    except _PIL_ERRORS as exc:
        raise _decode_error(path, exc) from None


def decode_image(path: Path, channels: int) -> torch.Tensor:
    """Decode ``path`` to a uint8 ``channels`` x H x W tensor (``channels`` is 1 or 3)."""
    with _quiet_torchvision():
        return _decode(path, channels)


RESIZED = {
    "crop": "scaled and centre-cropped",
    "squash": "scaled (aspect ratio changed)",
    "pad": "scaled and padded with black",
}


def conversion_note(path: Path, channels: int, size: tuple[int, int], resize: str = "crop") -> str | None:
    """What :func:`decode_image` and :func:`fit_size` change to bring ``path`` to ``channels`` and ``size``, in
    words for the user, or None when the file already has them."""
    info = probe_image(path)
    changes = []
    if info.colour and channels == 1:
        changes.append("colour converted to greyscale")
    elif not info.colour and channels == 3:
        changes.append("greyscale converted to 3 channels")
    if info.size != tuple(size):
        changes.append(
            f"{info.size[0]}x{info.size[1]} {RESIZED[resize]} to {size[0]}x{size[1]} (data.resize = {resize!r})"
        )
    return f"'{path}': " + ", ".join(changes) if changes else None


def fit_size(image: torch.Tensor, size: tuple[int, int], resize: str = "crop") -> torch.Tensor:
    """Bring ``image`` (C x H x W or N x C x H x W) to ``size`` by ``resize`` (``convscope.config.RESIZE_MODES``)."""
    height, width = image.shape[-2:]
    size = tuple(size)
    if (height, width) == size:
        return image
    if resize == "squash":
        return F.resize(image, list(size), antialias=True)
    cover = resize == "crop"
    scale = max(size[0] / height, size[1] / width) if cover else min(size[0] / height, size[1] / width)
    scaled = [round(height * scale), round(width * scale)]
    if cover:
        scaled = [max(size[0], scaled[0]), max(size[1], scaled[1])]
        return F.center_crop(F.resize(image, scaled, antialias=True), list(size))
    scaled = [min(size[0], max(1, scaled[0])), min(size[1], max(1, scaled[1]))]
    top, left = (size[0] - scaled[0]) // 2, (size[1] - scaled[1]) // 2
    padding = [left, top, size[1] - scaled[1] - left, size[0] - scaled[0] - top]
    return F.pad(F.resize(image, scaled, antialias=True), padding, fill=0)


def default_size(sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """A folder's image size when ``data.image_size`` is not set: the most common size of its files, scaled down
    (aspect kept) so that its longer side is at most :data:`MAX_DEFAULT_SIDE`."""
    height, width = Counter(sizes).most_common(1)[0][0]
    scale = min(1.0, MAX_DEFAULT_SIDE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def load_images(
    paths: Sequence[Path], *, skip_bad: bool = False, size: tuple[int, int] | None = None, resize: str = "crop"
) -> DecodedImages:
    """Decode ``paths`` in a thread pool into one tensor.

    Channels are 1 if every image is grey, else 3; images are brought to ``size`` by ``resize``,
    by default :func:`default_size`. A file that cannot be decoded raises
    :class:`UserError`, or with ``skip_bad`` is left out and listed in ``skipped``.
    """
    infos = _in_chunks(len(paths), lambda chunk: [_probe_or_skip(paths[i], skip_bad) for i in chunk])
    readable = [i for i, info in enumerate(infos) if info is not None]
    if not readable:
        raise _nothing_decoded(paths)
    channels = 3 if any(infos[i].colour for i in readable) else 1
    size = tuple(size) if size else default_size([infos[i].size for i in readable])
    out = torch.empty((len(readable), channels, *size), dtype=torch.uint8)

    def decode_chunk(chunk: range) -> list[int]:
        failed = []
        for slot in chunk:
            image = _decode_or_skip(paths[readable[slot]], channels, skip_bad)
            if image is None:
                failed.append(slot)
            else:
                out[slot] = fit_size(image, size, resize)
        return failed

    with _quiet_torchvision(), Stage(f"decoding {len(readable)} images", len(readable), unit="images") as stage:
        failed = set(_in_chunks(len(readable), decode_chunk, stage))
    kept_slots = [slot for slot in range(len(readable)) if slot not in failed]
    if not kept_slots:
        raise _nothing_decoded(paths)
    images = out if not failed else out[torch.tensor(kept_slots)]
    skipped = {i for i, info in enumerate(infos) if info is None} | {readable[slot] for slot in failed}
    return DecodedImages(images, [readable[slot] for slot in kept_slots], [paths[i] for i in sorted(skipped)])


def _decode(path: Path, channels: int) -> torch.Tensor:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _decode_error(path, exc) from None
    if data.startswith(_JPEG_MAGIC) or (data.startswith(_PNG_MAGIC) and _png_intact(data)):
        mode = torchvision.io.ImageReadMode.GRAY if channels == 1 else torchvision.io.ImageReadMode.RGB
        try:
            image = torchvision.io.decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
        except RuntimeError:
            pass  # PIL reads some files libjpeg/libpng refuse, and words the error better when it cannot
        else:
            # 16-bit PNGs come back as uint16; keep the high byte.
            return image if image.dtype == torch.uint8 else (image.to(torch.int32) >> 8).to(torch.uint8)
    try:
        return _decode_pil(data, channels)
    except _PIL_ERRORS as exc:
        raise _decode_error(path, exc) from None


def _png_intact(data: bytes) -> bool:
    """Whether every chunk's CRC holds and the image data inflates completely.

    torchvision 0.29's libpng decoder crashes the process (SIGSEGV) on a libpng error raised while it reads the
    rows, such as a damaged IDAT chunk; a file that fails this check goes to PIL, which says what is wrong.
    """
    position, compressed = len(_PNG_MAGIC), []
    while position + 12 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        crc = data[position + 8 + length : position + 12 + length]
        if len(body) != length or len(crc) != 4 or zlib.crc32(kind + body) != struct.unpack(">I", crc)[0]:
            return False
        if kind == b"IDAT":
            compressed.append(body)
        elif kind == b"IEND":
            inflater, pending = zlib.decompressobj(), b"".join(compressed)
            try:
                while pending and not inflater.eof:  # in bounded pieces, thrown away: a bomb never fills memory
                    inflater.decompress(pending, 1 << 20)
                    pending = inflater.unconsumed_tail
            except zlib.error:
                return False
            return inflater.eof
        position += 12 + length
    return False


def _decode_pil(data: bytes, channels: int) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        if img.mode in _WIDE_MODES:
            wide = np.asarray(img).astype(np.int32)
            img = Image.fromarray((np.clip(wide, 0, 65535) >> 8).astype(np.uint8))
        pixels = np.array(img.convert("L" if channels == 1 else "RGB"))
    if channels == 1:
        return torch.from_numpy(pixels).unsqueeze(0)
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def _decode_error(path: Path, exc: Exception) -> UserError:
    reason = "not an image file PIL can identify" if isinstance(exc, UnidentifiedImageError) else str(exc)
    return UserError(f"cannot decode image '{path}': {reason}")


def _nothing_decoded(paths: Sequence[Path]) -> UserError:
    first = f" (the first is '{paths[0]}')" if paths else ""
    return UserError(f"none of the {len(paths)} images could be decoded{first}")


def _probe_or_skip(path: Path, skip_bad: bool) -> ImageInfo | None:
    try:
        return probe_image(path)
    except UserError:
        if skip_bad:
            return None
        raise


def _decode_or_skip(path: Path, channels: int, skip_bad: bool) -> torch.Tensor | None:
    try:
        return _decode(path, channels)
    except UserError:
        if skip_bad:
            return None
        raise


def _in_chunks(count: int, work: Callable[[range], list[T]], stage: Stage | None = None) -> list[T]:
    """Run ``work`` over consecutive index ranges in a thread pool; results concatenated in order.

    Results are collected in order, so the error raised is the one of the earliest
    failing chunk; chunks not yet started are then cancelled.
    """
    chunks = [range(start, min(start + _CHUNK, count)) for start in range(0, count, _CHUNK)]
    workers = max(1, min(_MAX_WORKERS, os.cpu_count() or 1, len(chunks)))
    with ThreadPoolExecutor(workers, thread_name_prefix="convscope-decode") as pool:
        futures = [pool.submit(work, chunk) for chunk in chunks]
        try:
            results = []
            for chunk, future in zip(chunks, futures, strict=True):
                results += future.result()
                if stage is not None:
                    stage.advance(len(chunk))
            return results
        except BaseException:
            for future in futures:
                future.cancel()
            raise


@contextmanager
def _quiet_torchvision() -> Iterator[None]:
    # Entered from the calling thread only: warning filters are process-wide, so
    # the pool's threads see this filter without touching it themselves.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TORCHVISION_DEPRECATION, category=DeprecationWarning)
        yield
