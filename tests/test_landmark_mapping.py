"""read_landmark_mapping on eos' real ibug_to_*.txt files and on broken mapping files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facebench.errors import ModelFileError
from facebench.models.landmark_mapping import read_landmark_mapping

SHARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "eos-share"


def real(name: str) -> Path:
    path = SHARE / name
    if not path.is_file():
        pytest.skip(f"eos mapping {name} not found at {SHARE} (../shared/data beside the repository)")
    return path


def test_sfm_mapping_values():
    lm = read_landmark_mapping(real("ibug_to_sfm.txt"), n_vertices=3448)
    assert lm.shape == (68,) and lm.dtype == np.int32
    # the file's comments: 9 chin bottom, 31 nose tip, 37/46 outer eye corners, 49/55 mouth corners
    assert lm[[8, 30, 36, 45, 48, 54]].tolist() == [33, 114, 177, 610, 398, 812]
    missing = (np.flatnonzero(lm < 0) + 1).tolist()
    assert missing == [1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 61, 65]  # contour, inner corners
    assert (lm >= 0).sum() == 50 and lm.max() == 2842


def test_bfm_mappings_values():
    bfm2009 = read_landmark_mapping(real("ibug_to_bfm2009.txt"), n_vertices=53490)
    assert (bfm2009 >= 0).sum() == 18 and bfm2009[30] == 8319 and bfm2009[8] == -1
    bfm2017 = read_landmark_mapping(real("ibug_to_bfm2017-1_bfm_nomouth.txt"), n_vertices=53149)
    assert (bfm2017 >= 0).sum() == 26 and bfm2017[30] == 8156 and bfm2017[8] == 47846


def test_real_mapping_rejects_smaller_model():
    path = real("ibug_to_sfm.txt")
    with pytest.raises(ModelFileError, match=r"landmark 21: vertex 2086 >= model's 845 vertices") as info:
        read_landmark_mapping(path, n_vertices=845)  # SFM's lowest resolution level
    assert str(path) in str(info.value)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ibug_to_test.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text, message", [
    ("[landmark_mappings]\n31 = \n", "not a TOML landmark mapping"),
    ("this is = not [toml\n", "not a TOML landmark mapping"),
    ("[other]\n31 = 5\n", r"no \[landmark_mappings\] table"),
    ("[landmark_mappings]\n", r"no \[landmark_mappings\] table"),
    ("[landmark_mappings]\n0 = 5\n", "landmark key '0' is not an iBUG number"),
    ("[landmark_mappings]\n69 = 5\n", "landmark key '69' is not an iBUG number"),
    ("[landmark_mappings]\nnose = 5\n", "landmark key 'nose'"),
    ("[landmark_mappings]\n31 = -4\n", "landmark 31: vertex index -4 is not a non-negative integer"),
    ("[landmark_mappings]\n31 = 4.5\n", "landmark 31: vertex index 4.5"),
    ("[landmark_mappings]\n31 = true\n", "landmark 31: vertex index True"),
    ("[landmark_mappings]\n31 = \"114\"\n", "landmark 31: vertex index '114'"),
    ("[landmark_mappings]\n31 = 100\n", "landmark 31: vertex 100 >= model's 100 vertices"),
])
def test_bad_files(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ModelFileError, match=message) as info:
        read_landmark_mapping(path, n_vertices=100)
    assert str(info.value).startswith(str(path))


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        read_landmark_mapping(tmp_path / "absent.txt")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ModelFileError, match="not a TOML"):
        read_landmark_mapping(binary)


def test_small_valid_file_without_bound(tmp_path):
    lm = read_landmark_mapping(_write(tmp_path, "# comment\n[landmark_mappings]\n1 = 0\n68 = 99999\n"))
    assert lm[0] == 0 and lm[67] == 99999 and (lm >= 0).sum() == 2
