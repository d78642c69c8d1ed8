"""Tests of frame extraction (MJPEG, frame folders, ffmpeg fallback) and face crops."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import facebench.datasets.video as video
from facebench.datasets.video import (
    central_square_box,
    crop_and_resize,
    frame_file_number,
    mjpeg_frame_count,
    read_frame,
    to_crop_pixels,
)
from facebench.errors import InputFileError


def frame_colour(index: int) -> np.ndarray:
    """A distinct colour per frame index (the frame number encoded in the image)."""
    return np.array([(index * 53 + 20) % 256, (index * 101 + 90) % 256, (index * 29 + 160) % 256], np.uint8)


def jpeg_bytes(index: int, size=(24, 16), exif_thumbnail: bool = False) -> bytes:
    image = Image.new("RGB", size, tuple(int(c) for c in frame_colour(index)))
    out = io.BytesIO()
    if exif_thumbnail:  # an APP1 segment holding a second SOI..EOI image, as cameras write
        thumb = io.BytesIO()
        Image.new("RGB", (4, 4), (255, 0, 0)).save(thumb, "JPEG")
        exif = Image.Exif()
        image.save(out, "JPEG", quality=95, exif=exif.tobytes() + thumb.getvalue())
    else:
        image.save(out, "JPEG", quality=95)
    return out.getvalue()


def write_mjpeg(path, n: int, junk: bool = False, size=(24, 16)) -> None:
    parts = []
    for i in range(n):
        if junk:
            parts.append(b"--myboundary\r\nContent-Type: image/jpeg\r\n\r\n")
        parts.append(jpeg_bytes(i, size, exif_thumbnail=(i % 3 == 1)))
    path.write_bytes(b"".join(parts))


def mean_colour(image: np.ndarray) -> np.ndarray:
    return image.reshape(-1, 3).mean(axis=0)


@pytest.mark.parametrize("junk", [False, True])
def test_mjpeg_returns_the_right_frame(tmp_path, junk):
    path = tmp_path / "Indoor-Cooperative.mjpg"
    write_mjpeg(path, 12, junk=junk)
    assert mjpeg_frame_count(path) == 12
    for index in (0, 1, 4, 11):
        frame = read_frame(path, index)
        assert frame.shape == (16, 24, 3) and frame.dtype == np.uint8
        np.testing.assert_allclose(mean_colour(frame), frame_colour(index), atol=3)


def test_mjpeg_beyond_the_end_and_undecodable(tmp_path):
    path = tmp_path / "v.mjpeg"
    write_mjpeg(path, 3)
    with pytest.raises(InputFileError, match="frame index 3 is beyond the video's 3 frames"):
        read_frame(path, 3)
    garbage = tmp_path / "g.mjpg"
    garbage.write_bytes(b"not a video at all" * 10)
    with pytest.raises(InputFileError, match="no JPEG image"):
        read_frame(garbage, 0)
    broken = tmp_path / "b.mjpg"
    data = jpeg_bytes(0)
    broken.write_bytes(data[:40] + b"\x00" * 20)  # header then nothing decodable
    with pytest.raises(InputFileError, match="frame index 0: cannot decode"):
        read_frame(broken, 0)
    empty = tmp_path / "e.mjpg"
    empty.write_bytes(b"")
    with pytest.raises(InputFileError, match="empty video"):
        read_frame(empty, 0)


def test_frame_folder_uses_ffmpeg_numbering(tmp_path):
    """``ffmpeg -i v frame%04d.jpg`` numbers from 1: frame index k is file number k + 1."""
    folder = tmp_path / "Indoor-Cooperative"
    folder.mkdir()
    for number in (889, 890, 891):
        (folder / f"frame{number:04d}.jpg").write_bytes(jpeg_bytes(number - 1))
    assert frame_file_number(889) == 890
    np.testing.assert_allclose(mean_colour(read_frame(folder, 889)), frame_colour(889), atol=3)
    with pytest.raises(InputFileError, match=r"frame index 5 \(file number 6\) not found.*889..891"):
        read_frame(folder, 5)
    (folder / "frame890.jpg").write_bytes(jpeg_bytes(0))  # same number, other padding
    with pytest.raises(InputFileError, match="several files carry frame number 890"):
        read_frame(folder, 889)


def test_ffmpeg_missing_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "Indoor-Cooperative.mpg"
    path.write_bytes(b"\x00\x00\x01\xba" + b"\x00" * 100)
    monkeypatch.setattr(video.shutil, "which", lambda name: None)
    with pytest.raises(InputFileError, match="needs the ffmpeg executable.*folder of extracted frames"):
        read_frame(path, 0)


def test_unknown_format_and_missing_source(tmp_path):
    (tmp_path / "v.xyz").write_bytes(b"abc")
    with pytest.raises(InputFileError, match="unsupported video format"):
        read_frame(tmp_path / "v.xyz", 0)
    with pytest.raises(InputFileError, match="no such video"):
        read_frame(tmp_path / "none.mjpg", 0)


def test_central_square_and_crop_mapping():
    # a 10-wide, 6-high frame: the central square covers columns 2..7
    box = central_square_box(6, 10)
    np.testing.assert_allclose(box, [1.5, -0.5, 7.5, 5.5])
    image = np.zeros((6, 10, 3), np.uint8)
    image[:, 2:8] = 200
    crop = crop_and_resize(image, box, 6)  # same scale: an exact copy
    np.testing.assert_array_equal(crop, image[:, 2:8])
    # pixel centres map consistently: the crop's pixel (0, 0) is the frame's (2, 0)
    np.testing.assert_allclose(to_crop_pixels([[2.0, 0.0], [7.0, 5.0]], box, 6), [[0, 0], [5, 5]])
    np.testing.assert_allclose(to_crop_pixels([[2.0, 0.0]], box, 12), [[0.5, 0.5]])


def test_crop_outside_the_frame_is_black():
    image = np.full((4, 4, 3), 255, np.uint8)
    crop = crop_and_resize(image, (-4.5, -0.5, 3.5, 7.5), 8)  # left half and bottom half outside
    assert crop[:4, 4:].min() == 255 and crop[:, :4].max() == 0 and crop[4:].max() == 0
    with pytest.raises(ValueError):
        crop_and_resize(image, (2, 2, 1, 3), 8)


FAKE_FFMPEG = """#!{python}
import io, re, sys
from PIL import Image
args = sys.argv[1:]
if "broken" in args[args.index("-i") + 1]:
    sys.stderr.write("Invalid data found when processing input\\n")
    sys.exit(1)
n = int(re.search(r"eq\\(n\\\\,(\\d+)\\)", args[args.index("-vf") + 1]).group(1))
if n >= 5:  # a 5-frame video: nothing selected
    sys.exit(0)
c = ((n * 53 + 20) % 256, (n * 101 + 90) % 256, (n * 29 + 160) % 256)
out = io.BytesIO()
Image.new("RGB", (8, 6), c).save(out, "PNG")
sys.stdout.buffer.write(out.getvalue())
"""


def test_ffmpeg_path_selects_the_frame(tmp_path, monkeypatch):
    """The ffmpeg branch with a stand-in executable that honours ``select=eq(n\\,K)``."""
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ffmpeg"
    fake.write_text(FAKE_FFMPEG.replace("{python}", sys.executable))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ.get('PATH', '')}")
    video_path = tmp_path / "Indoor-Cooperative.mpg"
    video_path.write_bytes(b"\x00\x00\x01\xba")
    np.testing.assert_array_equal(read_frame(video_path, 3)[0, 0], frame_colour(3))
    with pytest.raises(InputFileError, match="frame index 7 is beyond"):
        read_frame(video_path, 7)
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"\x00")
    with pytest.raises(InputFileError, match="ffmpeg cannot decode the video \\(Invalid data"):
        read_frame(broken, 0)
