"""Single frames from the videos of real datasets, and face crops.

**Index convention.** Every ``index`` here is the **0-based** position of the frame in decoding
order. Frame files extracted with ``ffmpeg -i video frame%04d.jpg`` are numbered from **1**
(ffmpeg's image2 muxer starts at 1), so the file ``frame0890.jpg`` (or ``frame890.jpg``) holds
frame index 889. Ramon et al.'s MICC annotations name frames that way (``frame890.jpg``).

Sources (:func:`read_frame`):

- a **folder** of already extracted frames: files ``<prefix><number>.<jpg|jpeg|png|bmp>`` (any
  prefix, zero padding or not); index ``k`` is the file numbered ``k + 1``;
- ``.mjpg`` / ``.mjpeg``: a stream of concatenated JPEG images (MICC's Indoor-Cooperative
  videos); frames are found by walking each JPEG's marker segments from its SOI to its EOI (bytes
  between images, such as multipart headers, are skipped) and decoded with Pillow;
- ``.mpg``, ``.mpeg``, ``.avi``, ``.mp4``, ``.mov``, ``.mkv``: decoded by the ``ffmpeg`` executable
  when it is on ``PATH`` (``-vf select=eq(n\\,K)``, frame ``n`` counted from 0 in decoding order,
  which is the order of ffmpeg's numbered output); without ffmpeg a clear error says to install it
  or to give a folder of frames.

Every failure (unknown format, missing or undecodable frame, index beyond the video) raises
:class:`facebench.errors.InputFileError` naming the file.

:func:`crop_and_resize` cuts a box out of a frame (padding with black outside it) and resizes it
with Pillow's antialiasing filter. Boxes use the pixel-centre convention of
``facebench.conventions``: ``(x0, y0, x1, y1)`` are the crop's outer edges in coordinates where
(0, 0) is the centre of the top-left pixel, so the full W×H frame is ``(-0.5, -0.5, W-0.5, H-0.5)``.
"""

from __future__ import annotations

import io
import mmap
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from facebench.errors import InputFileError

__all__ = [
    "FRAME_SUFFIXES",
    "MJPEG_SUFFIXES",
    "FFMPEG_SUFFIXES",
    "read_frame",
    "frame_file_number",
    "mjpeg_frame_count",
    "read_image",
    "central_square_box",
    "crop_and_resize",
    "to_crop_pixels",
]

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MJPEG_SUFFIXES = (".mjpg", ".mjpeg")
FFMPEG_SUFFIXES = (".mpg", ".mpeg", ".avi", ".mp4", ".mov", ".mkv")
_NUMBERED = re.compile(r"^\D*?(\d+)\.(?:jpe?g|png|bmp)$", re.IGNORECASE)
_SOI, _EOI = b"\xff\xd8", b"\xff\xd9"
#: Markers without a length field (TEM, RSTn, SOI, EOI).
_STANDALONE = {0x01, *range(0xD0, 0xDA)}


def frame_file_number(index: int) -> int:
    """The number of frame ``index`` (0-based) in ffmpeg's 1-based ``frame%04d.jpg`` names."""
    return int(index) + 1


def read_frame(source: str | Path, index: int) -> np.ndarray:
    """Frame ``index`` (0-based, decoding order) of a video file or frame folder.

    Returns:
        ``(H,W,3)`` uint8 RGB, as stored (sRGB).

    Raises:
        InputFileError: missing source, unsupported format, index beyond the video, undecodable
            frame, ffmpeg missing for a container that needs it.
    """
    source = Path(source)
    if index < 0:
        raise InputFileError(source, f"frame index {index} is negative")
    if source.is_dir():
        return _folder_frame(source, index)
    if not source.is_file():
        raise InputFileError(source, "no such video file or frame folder")
    suffix = source.suffix.lower()
    if suffix in MJPEG_SUFFIXES:
        return _mjpeg_frame(source, index)
    if suffix in FFMPEG_SUFFIXES:
        return _ffmpeg_frame(source, index)
    if suffix in FRAME_SUFFIXES and index == 0:
        return read_image(source)
    raise InputFileError(source, f"unsupported video format {suffix!r} (expected a frame folder, "
                                 f"{', '.join(MJPEG_SUFFIXES + FFMPEG_SUFFIXES)})")


def read_image(path: str | Path, data: bytes | None = None) -> np.ndarray:
    """Decode an image file (or its bytes) to ``(H,W,3)`` uint8 RGB with Pillow."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise InputFileError(path, "no such image file") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise InputFileError(path, f"cannot decode image ({error})") from None


# ------------------------------------------------------------------------------ frame folder
def _folder_frame(folder: Path, index: int) -> np.ndarray:
    numbered: dict[int, list[Path]] = {}
    for path in folder.iterdir():
        m = _NUMBERED.match(path.name)
        if m and path.is_file():
            numbered.setdefault(int(m.group(1)), []).append(path)
    if not numbered:
        raise InputFileError(folder, "frame folder holds no numbered image files (e.g. frame0001.jpg)")
    number = frame_file_number(index)
    paths = numbered.get(number)
    if not paths:
        raise InputFileError(folder, f"frame index {index} (file number {number}) not found: the folder has "
                                     f"numbers {min(numbered)}..{max(numbered)}")
    if len(paths) > 1:
        raise InputFileError(folder, f"several files carry frame number {number}: "
                                     f"{', '.join(sorted(p.name for p in paths))}")
    return read_image(paths[0])


# ------------------------------------------------------------------------------ MJPEG
def _jpeg_end(data, start: int) -> int:
    """End (exclusive) of the JPEG image whose SOI is at ``start``; -1 when truncated."""
    position, n = start + 2, len(data)
    while position + 4 <= n:
        if data[position] != 0xFF:
            return -1
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0xD9:
            return position + 2
        if marker in _STANDALONE:
            position += 2
            continue
        length = (data[position + 2] << 8) | data[position + 3]
        position += 2 + length
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next real marker
            while True:
                ff = data.find(b"\xff", position)
                if ff < 0 or ff + 1 >= n:
                    return -1
                following = data[ff + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:
                    position = ff + 2
                    continue
                position = ff
                break
    return -1


def _mjpeg_spans(data, stop_at: int | None = None) -> list[tuple[int, int]]:
    """``(start, end)`` of each JPEG image of an MJPEG stream, up to image ``stop_at``."""
    spans: list[tuple[int, int]] = []
    position = 0
    while stop_at is None or len(spans) <= stop_at:
        start = data.find(_SOI + b"\xff", position)
        if start < 0:
            break
        end = _jpeg_end(data, start)
        if end < 0:
            spans.append((start, len(data)))  # truncated last image: kept, decoding will tell
            break
        spans.append((start, end))
        position = end
    return spans


def _open_bytes(path: Path):
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise InputFileError(path, f"cannot read video ({error.strerror or error})") from None
    with handle:
        if path.stat().st_size == 0:
            raise InputFileError(path, "empty video file")
        return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)


def mjpeg_frame_count(path: str | Path) -> int:
    """Number of JPEG images in an MJPEG file."""
    path = Path(path)
    data = _open_bytes(path)
    try:
        return len(_mjpeg_spans(data))
    finally:
        data.close()


def _mjpeg_frame(path: Path, index: int) -> np.ndarray:
    data = _open_bytes(path)
    try:
        spans = _mjpeg_spans(data, stop_at=index)
        if not spans:
            raise InputFileError(path, "no JPEG image in the MJPEG video (cannot be decoded)")
        if index >= len(spans):
            raise InputFileError(path, f"frame index {index} is beyond the video's {len(spans)} frames")
        start, end = spans[index]
        blob = bytes(data[start:end])
    finally:
        data.close()
    try:
        return read_image(path, blob)
    except InputFileError as error:
        raise InputFileError(path, f"frame index {index}: {error.message}") from None


# ------------------------------------------------------------------------------ ffmpeg
def _ffmpeg_frame(path: Path, index: int, timeout: float = 600.0) -> np.ndarray:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise InputFileError(path, "decoding this video needs the ffmpeg executable on PATH: install ffmpeg "
                                   "(e.g. apt-get install ffmpeg) or give a folder of extracted frames "
                                   "(ffmpeg -i VIDEO frame%04d.jpg)")
    command = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-vf", f"select=eq(n\\,{int(index)})",
               "-frames:v", "1", "-f", "image2pipe", "-vcodec", "png", "-"]
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise InputFileError(path, f"ffmpeg failed ({error})") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise InputFileError(path, f"ffmpeg cannot decode the video ({message[-1] if message else done.returncode})")
    if not done.stdout:
        raise InputFileError(path, f"frame index {index} is beyond the video's frames (ffmpeg returned none)")
    return read_image(path, done.stdout)


# ------------------------------------------------------------------------------ crops
def central_square_box(height: int, width: int) -> np.ndarray:
    """The largest centred square of a frame, ``(x0, y0, x1, y1)`` edges, pixel-centre convention."""
    side = min(height, width)
    x0 = (width - side) / 2.0 - 0.5
    y0 = (height - side) / 2.0 - 0.5
    return np.array([x0, y0, x0 + side, y0 + side], np.float64)


def crop_and_resize(image: np.ndarray, box, size: int) -> np.ndarray:
    """Cut ``box`` (edges, pixel-centre convention) out of ``image (H,W,3)`` uint8, resize to ``size``².

    Parts of the box outside the frame are black. Resampling: Pillow's Lanczos filter
    (antialiased when shrinking).

    Returns:
        ``(size,size,3)`` uint8.
    """
    from PIL import Image

    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0) or not np.isfinite([x0, y0, x1, y1]).all():
        raise ValueError(f"invalid crop box {box}")
    h, w = image.shape[:2]
    # Pillow's box uses pixel-edge coordinates: edge = centre coordinate + 0.5.
    left, top, right, bottom = x0 + 0.5, y0 + 0.5, x1 + 0.5, y1 + 0.5
    pad_l, pad_t = max(0, int(np.ceil(-left))), max(0, int(np.ceil(-top)))
    pad_r, pad_b = max(0, int(np.ceil(right - w))), max(0, int(np.ceil(bottom - h)))
    if pad_l or pad_t or pad_r or pad_b:
        image = np.pad(image, ((pad_t, pad_b), (pad_l, pad_r), (0, 0)))
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    resized = pil.resize((size, size), Image.Resampling.LANCZOS,
                         box=(left + pad_l, top + pad_t, right + pad_l, bottom + pad_t))
    return np.asarray(resized, np.uint8)


def to_crop_pixels(points, box, size: int) -> np.ndarray:
    """Map frame pixel coordinates ``(...,2)`` (pixel centres) into the ``size``² crop of ``box``."""
    points = np.asarray(points, np.float64)
    x0, y0, x1, y1 = (float(v) for v in box)
    scale = np.array([size / (x1 - x0), size / (y1 - y0)])
    return (points - np.array([x0, y0])) * scale - 0.5
