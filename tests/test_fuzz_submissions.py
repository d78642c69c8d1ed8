"""A seeded fuzz suite of hostile and broken submissions (a few hundred cases, under a minute).

Every case goes through ``facebench submission validate`` and ``facebench score`` in-process and
must end with exit 0 (valid, scored) or 2 (refused with a reason on the first line) — never a
traceback, never ``internal error`` (exit 1) — and both commands must agree on whether the
submission is acceptable. Cases: HDF5 files with mutated attributes, arrays of wrong or huge
declared shapes (never written: declared only), wrong dtypes, non-finite values, out-of-range
indices, corrupted and truncated bytes; folder and zip submissions with hostile manifests
(deep nesting, huge numbers, junk), hostile mesh files and hostile archives. ``FUZZ_CASES``
(environment) raises the number of random cases for a longer local run.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from facebench.benchmark.submission_writer import write_submission
from facebench.cli import main
from facebench.datasets.dataset_file import FaceDataset
from facebench.datasets.generator import GeneratorSettings, generate
from facebench.meshio import write_mesh

SEED = 20240616
N_RANDOM = int(os.environ.get("FUZZ_CASES", "120"))

_HUGE_SHAPES = {
    "ids": [(2**40,), (10**7,)],
    "vertices": [(3, 10**8, 3), (2**31, 5, 3), (3, 5, 10**6)],
    "faces": [(10**9, 3), (10**7, 3), (5, 10**6)],
    "landmark_indices": [(4 * 10**9,), (10**7,)],
    "landmarks": [(3, 10**7, 3), (10**8, 68, 3)],
    "q": [(10**9, 4)], "t": [(10**9, 3)],
}
_ATTRIBUTE_VALUES = [
    "", " ", "\t\n", "x" * 200, "x" * 20_000_000, "=HYPERLINK(\"http://x\")", "a,b", "a\x00b", "\u202e",
    np.bytes_(b"\xff\xfe"), np.bytes_("a\ud800".encode("utf-8", "surrogatepass")), 1, -1, 2**62, 1.5, np.nan,
    np.arange(5), np.zeros((2, 2)), "facebench-submission", True,
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    dataset = root / "synth.h5"
    generate(GeneratorSettings(n=3, size=32, seed=11), dataset)
    ds = FaceDataset(dataset)
    truth = {"ids": list(ds.ids), "vertices": ds.read("vertices").astype(np.float64), "q": ds.read("q"),
             "t": ds.read("t"), "faces": np.asarray(ds.faces, np.int64),
             "landmark_indices": np.asarray(ds.landmark_indices, np.int64)}
    base = write_submission(root / "base.h5", truth["ids"], truth["vertices"], method="base", q=truth["q"],
                            t=truth["t"])
    return {"root": root, "dataset": dataset, "truth": truth, "base": base}


def _run(world, submission: Path, out: Path):
    runner = CliRunner()
    validated = runner.invoke(main, ["submission", "validate", "--dataset", str(world["dataset"]),
                                     "--submission", str(submission)])
    scored = runner.invoke(main, ["score", "--dataset", str(world["dataset"]), "--submission", str(submission),
                                  "--out", str(out)])
    return validated, scored


def _check(world, submission: Path, out: Path, case: str) -> None:
    validated, scored = _run(world, submission, out)
    for name, result in (("validate", validated), ("score", scored)):
        text = result.output
        assert result.exit_code in (0, 2), f"{case}: {name} exit {result.exit_code}: {text[-2000:]}"
        assert "Traceback" not in text and "internal error" not in text, f"{case}: {name}: {text[-2000:]}"
        assert result.exception is None or isinstance(result.exception, SystemExit), f"{case}: {result.exception!r}"
        if result.exit_code == 2:
            first = text.splitlines()[0] if text else ""
            assert first and ("invalid submission" in first or first.startswith("error:")), f"{case}: {first!r}"
            assert len(first) < 2000, f"{case}: first line of {len(first)} characters"
    assert (validated.exit_code == 0) == (scored.exit_code == 0), \
        f"{case}: validate {validated.exit_code} but score {scored.exit_code}: {scored.output[-1500:]}"


# ---------------------------------------------------------------------------------------- HDF5
def _declare(f: h5py.File, name: str, shape, dtype="f8") -> None:
    """A dataset declared with ``shape`` but never written (chunked: no space is allocated)."""
    if name in f:
        del f[name]
    chunks = tuple(max(1, min(int(s), 64)) for s in shape) if len(shape) else None
    f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks)


def _mutate_hdf5(path: Path, rng: random.Random, world) -> str:
    """Apply 1–3 random mutations to the HDF5 submission at ``path``; return their description."""
    truth, done = world["truth"], []
    n, V = len(truth["ids"]), truth["vertices"].shape[1]
    with h5py.File(path, "r+", libver="latest") as f:  # latest: dense attribute storage (20 MB attributes)
        for _ in range(rng.randint(1, 3)):
            try:
                kind = rng.choice(["attr", "huge", "dtype", "nonfinite", "faces", "lmidx", "shape", "drop", "extra",
                                   "ids"])
                if kind == "attr":
                    name = rng.choice(["format", "version", "method"])
                    value = rng.choice(_ATTRIBUTE_VALUES)
                    try:
                        f.attrs[name] = value
                    except OSError:  # HDF5 cannot store it here (object header too large): not a case
                        continue
                    done.append(f"attr {name}={str(value)[:20]!r}")
                elif kind == "huge":
                    name = rng.choice(sorted(_HUGE_SHAPES))
                    shape = rng.choice(_HUGE_SHAPES[name])
                    _declare(f, name, shape, "i8" if name in ("faces", "landmark_indices") else
                             ("S8" if name == "ids" else "f8"))
                    done.append(f"huge {name}{shape}")
                elif kind == "dtype":
                    name = rng.choice(["vertices", "ids", "q", "t"])
                    data = f[name][()] if name in f and f[name].size < 10**6 else np.zeros(3)
                    if name in f:
                        del f[name]
                    choice = rng.choice(["i4", "S4", "f2", "b", "c16", "vlen"])
                    if choice == "vlen":
                        f.create_dataset(name, data=np.array(["x"] * len(data), dtype=object),
                                         dtype=h5py.string_dtype())
                    else:
                        try:
                            f.create_dataset(name, data=np.asarray(data).astype(choice))
                        except (ValueError, TypeError):
                            f.create_dataset(name, data=np.zeros(np.shape(data), choice))
                    done.append(f"dtype {name}={choice}")
                elif kind == "nonfinite" and "vertices" in f and f["vertices"].dtype.kind == "f" \
                        and f["vertices"].size < 10**6:
                    v = f["vertices"][()]
                    if v.size:
                        with np.errstate(over="ignore"):
                            v.reshape(-1)[rng.randrange(v.size)] = rng.choice([np.nan, np.inf, -np.inf, 1e300])
                        f["vertices"][...] = v
                    done.append("nonfinite vertex")
                elif kind == "faces":
                    faces = truth["faces"].copy()
                    faces[rng.randrange(len(faces)), rng.randrange(3)] = rng.choice([-5, V, 2**40, V + 1])
                    if "faces" in f:
                        del f["faces"]
                    f.create_dataset("faces", data=rng.choice([faces, faces.astype("f8"), faces[:, :2], faces[:0]]))
                    done.append("faces")
                elif kind == "lmidx":
                    idx = truth["landmark_indices"].copy()
                    idx[rng.randrange(len(idx))] = rng.choice([-2, V, 4 * 10**9, 2**62])
                    if "landmark_indices" in f:
                        del f["landmark_indices"]
                    f.create_dataset("landmark_indices", data=rng.choice([idx, idx[:5], idx.astype("f4")]))
                    done.append("landmark_indices")
                elif kind == "shape":
                    name = rng.choice(["vertices", "q", "t"])
                    if name in f:
                        del f[name]
                    f.create_dataset(name, data=np.zeros(rng.choice([(n,), (n, 4, 3), (n + 1, V, 3), (n, 2), (0, 3)])))
                    done.append(f"shape {name}")
                elif kind == "drop":
                    name = rng.choice(["ids", "vertices", "q", "t"])
                    if name in f:
                        del f[name]
                    done.append(f"drop {name}")
                elif kind == "extra":
                    target = rng.choice(["group", "attr20mb", "soft", "external"])
                    if target == "group":
                        f.create_group("nested").create_group("deeper")
                    elif target == "attr20mb":
                        try:
                            f.attrs["junk"] = np.zeros(2_500_000)
                        except OSError:  # HDF5 cannot store it here: not a case
                            continue
                    elif target == "soft":
                        f["link"] = h5py.SoftLink("/nowhere")
                    else:
                        f["ext"] = h5py.ExternalLink("/etc/passwd", "/x")
                    done.append(f"extra {target}")
                elif kind == "ids":
                    ids = list(truth["ids"])
                    choice = rng.choice(["dup", "unknown", "long", "empty", "nonutf8"])
                    if choice == "dup":
                        ids[1] = ids[0]
                    elif choice == "unknown":
                        ids[0] = "nobody"
                    elif choice == "long":
                        ids[0] = "x" * 1_000_000
                    elif choice == "empty":
                        ids = []
                    if "ids" in f:
                        del f["ids"]
                    if choice == "nonutf8":
                        f.create_dataset("ids", data=np.array([b"\xff\xfe"] * n, dtype="S2"))
                    else:
                        f.create_dataset("ids", data=np.array(ids, dtype=h5py.string_dtype()))
                    done.append(f"ids {choice}")
            except (OSError, RuntimeError, KeyError, ValueError, TypeError):  # HDF5 refused the mutation itself
                continue
    return ", ".join(done) or "none"


def _corrupt_bytes(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    kind = rng.choice(["flip", "truncate", "zero"])
    if kind == "truncate":
        path.write_bytes(bytes(data[: rng.randrange(len(data))]))
        return "truncated"
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(min(len(data), 4096))  # the metadata lives at the start of small files
        data[at] = 0 if kind == "zero" else data[at] ^ (1 << rng.randrange(8))
    path.write_bytes(bytes(data))
    return f"bytes {kind}"


def test_random_hdf5_mutations(world, tmp_path):
    rng = random.Random(SEED)
    for case in range(N_RANDOM):
        path = tmp_path / f"c{case}.h5"
        shutil.copyfile(world["base"], path)
        what = _mutate_hdf5(path, rng, world)
        if rng.random() < 0.2:
            what += ", " + _corrupt_bytes(path, rng)
        _check(world, path, tmp_path / f"r{case}", f"hdf5 case {case} ({what})")


@pytest.mark.parametrize("name", sorted(_HUGE_SHAPES))
def test_declared_huge_arrays_are_refused_unread(world, tmp_path, name):
    import tracemalloc

    for shape in _HUGE_SHAPES[name]:
        path = tmp_path / "huge.h5"
        shutil.copyfile(world["base"], path)
        with h5py.File(path, "r+") as f:
            _declare(f, name, shape, "i8" if name in ("faces", "landmark_indices") else ("S8" if name == "ids" else "f8"))
        tracemalloc.start()
        validated, scored = _run(world, path, tmp_path / "r")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert validated.exit_code == 2 and scored.exit_code == 2, (validated.output, scored.output)
        first = scored.output.splitlines()[0]
        assert "too-large" in first or "bad-shape" in first, scored.output
        assert peak < 200 * 2**20, f"{name}{shape}: {peak / 2**20:.0f} MiB allocated"


# ------------------------------------------------------------------------------- folder and zip
def _folder(world, root: Path, rng: random.Random) -> tuple[Path, str]:
    truth = world["truth"]
    root.mkdir()
    manifest = {"format": "facebench-submission", "version": 1, "method": "fold",
                "q": {i: q.tolist() for i, q in zip(truth["ids"], truth["q"])},
                "t": {i: t.tolist() for i, t in zip(truth["ids"], truth["t"])}}
    for i, v in zip(truth["ids"], truth["vertices"]):
        write_mesh(root / f"{i}.ply", v, truth["faces"])
    kind = rng.choice(["deep", "hugeint", "junk", "method", "plyinf", "plyhuge", "wrongtype", "emptyq", "none",
                       "bigmanifest", "nan"])
    text = None
    if kind == "deep":
        depth = rng.choice([100, 10_000, 100_000])
        text = '{"format": "facebench-submission", "version": 1, "x": ' + "[" * depth + "]" * depth + "}"
    elif kind == "hugeint":
        manifest["q"][truth["ids"][0]] = ["HUGE", 0, 0, 0]
        if rng.random() < 0.5:
            manifest["version"] = 10**400 if rng.random() < 0.5 else 2**64
        digits = rng.choice([30, 300, 5000])  # beyond float64 and beyond Python's int parsing limit
        text = json.dumps(manifest).replace('"HUGE"', "1" + "0" * digits)
    elif kind == "junk":
        text = rng.choice(["", "{", "[]", "null", "\x00\xff", "{\"format\": NaN}", "1e999999"])
    elif kind == "method":
        manifest["method"] = rng.choice([" ", "\ud800", "a\nb", ["x"], {"a": 1}, 5, "=1+1", "x" * 500])
    elif kind in ("plyinf", "plyhuge"):
        token = "inf" if kind == "plyinf" else rng.choice(["1e300", "-1e300", "nan", "1.5", "9" * 40])
        lines = ["ply", "format ascii 1.0", "element vertex 3", "property float x", "property float y",
                 "property float z", "element face 1", "property list uchar int vertex_indices", "end_header",
                 "0 0 0", "1 0 0", "0 1 0", f"3 0 1 {token}"]
        (root / f"{truth['ids'][0]}.ply").write_text("\n".join(lines) + "\n")
    elif kind == "wrongtype":
        manifest[rng.choice(["q", "t", "landmarks", "landmark_indices"])] = rng.choice([5, "x", [1, 2], None, [[1]]])
    elif kind == "emptyq":
        manifest["q"] = {}
    elif kind == "bigmanifest":
        manifest["landmarks"] = {truth["ids"][0]: [[0.0, 0.0, 0.0]] * 200_000}
    elif kind == "nan":
        manifest["t"][truth["ids"][0]] = [float("nan"), 0, float("inf")]
    if text is None:
        text = json.dumps(manifest, ensure_ascii=rng.random() < 0.5)
    (root / "manifest.json").write_text(text, encoding="utf-8", errors="surrogatepass")
    return root, kind


def _zip(folder: Path, path: Path, rng: random.Random) -> str:
    kind = rng.choice(["plain", "encrypted", "deep", "dotdot", "longname", "many"])
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, file.name)
        if kind == "deep":
            archive.writestr("/".join(["d"] * 200) + "/x.txt", "x")
        elif kind == "dotdot":
            archive.writestr("../escape.txt", "x")
        elif kind == "longname":
            archive.writestr("n" * 5000, "x")
        elif kind == "many":
            for k in range(2000):
                archive.writestr(f"stray{k}.txt", "")
    if kind == "encrypted":  # set the "encrypted" flag bit of the first member in both headers
        data = bytearray(path.read_bytes())
        data[6] |= 1
        central = data.rfind(b"PK\x01\x02")
        while central > 0:
            data[central + 8] |= 1
            central = data.rfind(b"PK\x01\x02", 0, central)
        path.write_bytes(bytes(data))
    return kind


def test_random_folder_and_zip_submissions(world, tmp_path):
    rng = random.Random(SEED + 1)
    for case in range(max(N_RANDOM // 2, 30)):
        folder, kind = _folder(world, tmp_path / f"f{case}", rng)
        target, what = folder, f"folder {kind}"
        if rng.random() < 0.4:
            target = tmp_path / f"z{case}.zip"
            what += ", zip " + _zip(folder, target, rng)
        _check(world, target, tmp_path / f"r{case}", f"case {case} ({what})")


def test_nothing_is_written_outside_the_output_folder(world, tmp_path):
    rng = random.Random(SEED + 2)
    folder, _ = _folder(world, tmp_path / "f", rng)
    target = tmp_path / "evil.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, file.name)
        archive.writestr("../../escaped.txt", "x")
    _check(world, target, tmp_path / "r", "zip slip")
    assert not (tmp_path.parent / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
