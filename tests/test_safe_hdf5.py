"""The safe HDF5 opener refuses every structure that makes HDF5 read outside the file.

Each hostile file points at a marker file holding bytes that must never reach a result or a message.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from facebench.errors import InputFileError
from facebench.safe_hdf5 import check_structure, checked_dataset, open_hdf5, parse_json

MARKER = b"MARKER-7f3a-never-read"


@pytest.fixture()
def marker(tmp_path):
    """A raw marker file and an HDF5 file holding the marker as a dataset."""
    raw = tmp_path / "secret.bin"
    raw.write_bytes(MARKER * 4)
    other = tmp_path / "secret.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.frombuffer(MARKER * 4, np.uint8)
    return raw, other


def _refused(path, member: str) -> str:
    with pytest.raises(InputFileError) as info:
        open_hdf5(path)
    message = str(info.value)
    assert member in message and str(path) in message
    assert MARKER.decode() not in message and "\n" not in message
    return message


def test_plain_file_opens_and_reads(tmp_path):
    path = tmp_path / "ok.h5"
    with h5py.File(path, "w") as f:
        f["vertices"] = np.zeros((2, 5, 3), np.float32)
        f["ids"] = np.array([b"a", b"b"], dtype=h5py.string_dtype())
        f.create_dataset("packed", data=np.arange(100), chunks=(10,), compression="gzip", shuffle=True,
                         fletcher32=True)
        f.create_group("scans/s1")["faces"] = np.zeros((4, 3), np.int32)
        f["scans/alias"] = h5py.SoftLink("/scans/s1")  # a soft link inside the file is fine
        f.attrs["settings"] = '{"a": [1, 2, {"b": 3}]}'
    with open_hdf5(path) as f:
        assert f["packed"][:].sum() == 4950
        assert f["scans/alias/faces"].shape == (4, 3)


def test_external_link_refused(tmp_path, marker):
    path = tmp_path / "ext.h5"
    with h5py.File(path, "w") as f:
        f["vertices"] = np.zeros((1, 3, 3), np.float32)
        f["landmark_indices"] = h5py.ExternalLink(str(marker[1]), "/data")
    assert "external link" in _refused(path, "landmark_indices")


def test_external_raw_storage_refused(tmp_path, marker):
    path = tmp_path / "raw.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("landmark_indices", shape=(len(MARKER),), dtype=np.uint8,
                         external=[(str(marker[0]), 0, len(MARKER))])
    assert "external raw storage" in _refused(path, "landmark_indices")


def test_virtual_dataset_refused(tmp_path, marker):
    path = tmp_path / "vds.h5"
    layout = h5py.VirtualLayout(shape=(4 * len(MARKER),), dtype=np.uint8)
    layout[:] = h5py.VirtualSource(str(marker[1]), "data", shape=(4 * len(MARKER),))
    with h5py.File(path, "w") as f:
        f.create_group("scans").create_virtual_dataset("vertices", layout)
    assert "virtual dataset" in _refused(path, "scans/vertices")


@pytest.mark.parametrize("links, why", [
    ({"faces": "/nowhere"}, "does not exist"),
    ({"faces": "/loop", "loop": "/faces"}, "cycle"),
    ({"faces": "/through/data"}, "external link"),
])
def test_soft_links_that_leave_the_tree_refused(tmp_path, marker, links, why):
    path = tmp_path / "soft.h5"
    with h5py.File(path, "w") as f:
        if "through" in links["faces"]:
            f["through"] = h5py.ExternalLink(str(marker[1]), "/")
        for name, target in links.items():
            f[name] = h5py.SoftLink(target)
    with pytest.raises(InputFileError) as info:
        open_hdf5(path)
    message = str(info.value)
    assert why in message and any(f"member {m!r}" in message for m in ("faces", "loop", "through"))
    assert MARKER.decode() not in message


def test_compound_reference_vlen_and_named_types_refused(tmp_path):
    cases = {
        "compound": lambda f: f.create_dataset("faces", (2,), dtype=np.dtype([("a", "<i4"), ("b", "<f4")])),
        "references": lambda f: f.create_dataset("ids", (1,), dtype=h5py.ref_dtype),
        "variable-length": lambda f: f.create_dataset("q", (2,), dtype=h5py.vlen_dtype(np.float64)),
        "committed": lambda f: f.__setitem__("kind", np.dtype("<f8")),
    }
    for why, make in cases.items():
        path = tmp_path / f"{why}.h5"
        with h5py.File(path, "w") as f:
            make(f)
        assert why in _refused(path, {"compound": "faces", "references": "ids", "variable-length": "q",
                                      "committed": "kind"}[why])


def test_attribute_with_compound_type_refused(tmp_path):
    path = tmp_path / "attr.h5"
    with h5py.File(path, "w") as f:
        f["vertices"] = np.zeros(3)
        f["vertices"].attrs.create("unit", np.zeros(1, dtype=[("a", "<i4")]))
    assert "attribute" in _refused(path, "vertices@unit")


def test_unknown_filter_refused(tmp_path):
    path = tmp_path / "filter.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("vertices", data=np.arange(10), chunks=(5,), compression=307, allow_unknown_filter=True)
    assert "unknown filter 307" in _refused(path, "vertices")


def test_not_hdf5_and_missing(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(InputFileError, match="not a readable HDF5"):
        open_hdf5(junk)
    with pytest.raises(InputFileError, match="not found"):
        open_hdf5(tmp_path / "none.h5")


def test_checked_dataset_kind_shape_and_size(tmp_path):
    path = tmp_path / "sizes.h5"
    with h5py.File(path, "w") as f:
        f["landmark_indices"] = np.arange(68, dtype=np.int32)
        f["vertices"] = np.zeros((2, 5, 3), np.float32)
        f.create_dataset("huge", shape=(10**9, 3), dtype=np.int32)  # declared only, never written
    with open_hdf5(path) as f:
        check_structure(f, path)
        assert checked_dataset(f, "landmark_indices", kind="int", shape=(68,), path=path).shape == (68,)
        assert checked_dataset(f, "vertices", kind="float", shape=(None, 5, 3), path=path).shape == (2, 5, 3)
        with pytest.raises(InputFileError, match="'vertices' has type float32, expected int"):
            checked_dataset(f, "vertices", kind="int", ndim=3, path=path)
        with pytest.raises(InputFileError, match=r"expected \(\*, 6, 3\)"):
            checked_dataset(f, "vertices", kind="float", shape=(None, 6, 3), path=path)
        with pytest.raises(InputFileError, match="more than the 1000"):
            checked_dataset(f, "huge", kind="int", ndim=2, max_elements=1000, path=path)
        with pytest.raises(InputFileError, match="'absent' is missing"):
            checked_dataset(f, "absent", kind="int", path=path)


def test_parse_json_bounds():
    assert parse_json('{"a": [1, {"b": "]]]]"}]}', path=None, member="settings") == {"a": [1, {"b": "]]]]"}]}
    assert parse_json(b'[1, 2]', path=None, member="settings") == [1, 2]
    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(InputFileError, match="deeper than 64"):
        parse_json(deep, path="f.h5", member="settings")
    with pytest.raises(InputFileError, match="more than 10"):
        parse_json("[" + "1," * 20 + "1]", path="f.h5", member="settings", max_chars=10)
    with pytest.raises(InputFileError, match="not valid JSON"):
        parse_json("{nope", path="f.h5", member="settings")
    with pytest.raises(InputFileError, match="not UTF-8"):
        parse_json(b"\xff\xfe", path="f.h5", member="settings")
    # strings holding brackets do not count as nesting
    assert parse_json('"' + "[" * 100 + '"', path=None, member="s") == "[" * 100
