"""ICT-FaceKit Light (MIT): fetch the ``FaceXModel/`` files, convert them into a MorphableModel.

Upstream: https://github.com/ICT-VGL/ICT-FaceKit at the pinned commit :data:`ICT_COMMIT`.
``FaceXModel/`` holds ``generic_neutral_mesh.obj`` (26719 vertices, quads and a few triangles),
``identity000..099.obj`` (100 identity modes), 53 expression blendshapes (``<name>.obj``, the
names listed in ``vertex_indices.json["expressions"]``) and ``vertex_indices.json`` (landmarks:
``idx_to_landmark_verts``, the 68 iBUG/Multi-PIE points, 0-based). Every OBJ is a full mesh of
the same topology; a mode is ``mesh - neutral``.

What the conversion does, and what was measured on the pinned files:

- **Units**: ICT is in centimetres (landmark jaw width iBUG 1-17 = 14.7); multiplied by 10 to mm.
- **Frame**: ICT's axes already are facebench's head frame: +y up (brows above the mouth),
  +z out of the face (the nose tip, iBUG 31, is the landmark of largest z), +x toward the
  subject's left (the subject's left outer eye corner, iBUG 46, has x > 0). No rotation is applied;
  :func:`convert_ict` checks these three facts and refuses files that break them.
- **Origin**: ICT's own origin, on the mid-sagittal plane (x = 0) about 131 mm behind the nose tip
  and 4 mm below it (inside the head, at the height of the nose tip); the exact figures of the
  converted files are written into ``origin``.
- **Identity**: the 100 identity OBJs are principal components already scaled to one standard
  deviation: over the full mesh their offsets are mutually orthogonal (cosines < 1e-3) and their
  norms decrease (612, 380, 294, ... mm for the first ones). Each offset becomes a unit-norm
  basis column with ``identity_std`` = its norm in mm (the norm over the vertices kept by
  ``region``), so identity coefficient ``e_k`` reproduces ``identity{k:03d}.obj`` exactly.
  (Restricted to the face region the columns are nearly, not exactly, orthogonal.)
- **Expression**: blendshapes, not a statistical space: basis = offset / norm, std = norm, so
  coefficient 1 is the full blendshape (ARKit-style weights in [0, 1]).
- **Reflectance**: ICT Light has none; the synthetic model's reflectance is transferred by
  :func:`facebench.models.reflectance_transfer.with_synthetic_reflectance`.

Downloads (:func:`fetch_ict`) are checked against sha256 values pinned in :data:`ICT_SHA256`.
Only 18 of the 155 upstream files have a pinned hash (those we could verify: the neutral mesh,
identity000-009, 6 expressions, vertex_indices.json); by default only those are fetched, and the
rest are accepted only with ``allow_unpinned=True``, their hashes being recorded in
``manifest.json`` beside the cache so that a maintainer can pin them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facebench.atomic import write_json
from facebench.cache import cache_dir
from facebench.download import DownloadHashError, download
from facebench.errors import FacebenchError, InputFileError, ModelFileError
from facebench.hashing import file_sha256
from facebench.meshio import ObjMesh, read_obj
from facebench.models.morphable_model import N_LANDMARKS, MorphableModel, empty_basis
from facebench.models.reflectance_transfer import constant_reflectance, with_synthetic_reflectance

__all__ = [
    "ICT_COMMIT",
    "DEFAULT_BASE_URL",
    "ICT_SHA256",
    "REGIONS",
    "convert_ict",
    "load_ict",
    "fetch_ict",
    "ict_cache_dir",
]

#: Upstream commit the pinned files come from.
ICT_COMMIT = "da5f95a607f5e6b37755b38d3385d7f2853732e5"
#: Where :func:`fetch_ict` downloads ``FaceXModel/<file>`` from.
DEFAULT_BASE_URL = f"https://raw.githubusercontent.com/ICT-VGL/ICT-FaceKit/{ICT_COMMIT}/FaceXModel/"

#: sha256 of the upstream files at :data:`ICT_COMMIT` that could be verified (a local copy of
#: that commit's files). identity010..099 and the other 47 expressions are not pinned yet.
ICT_SHA256: dict[str, str] = {
    "browInnerUp_L.obj": "81fb1625794ea36fb13303234ce06cef798acfdbc489077e22ae195a705bc92e",
    "eyeBlink_L.obj": "f5ed1c3072a400083b7d4f7f5cb3d73882b7ebb95c3232f957394db8cf7fe19e",
    "eyeBlink_R.obj": "d281ad0af03e89a70abf1214d52c295b3a279c9b35f6795938c4487f467ca003",
    "generic_neutral_mesh.obj": "eedbc2576d8e5ea57f55255b8f98263213a1efb5431d8bfceed1d7aef10271f9",
    "identity000.obj": "918160cf82d541336b4c367cf93199c9827832bde02511b8fbdf9019d6f1a773",
    "identity001.obj": "325115059deb6691cb2d55da07ae38bb08ce36e4ea146982f294a17513155b3b",
    "identity002.obj": "e140e8305cd5232def3b94331d08450a13f312e525130fca8eeaa653231decc3",
    "identity003.obj": "be3481a6bed8953a6d9dd7f811a04bc6d2ab94d1bd76ecfaa6d4cae87a450f9d",
    "identity004.obj": "a2f411cc763e881cff250eb23c04fe8375b63a05a7dfa0492422e3b943e8a01d",
    "identity005.obj": "274178eb33e33c555e6024535a51a62ee50050abd4f7014bbc7a4dc90a638c65",
    "identity006.obj": "c9ae0426ab88b49065c852148f7bcff8cb09253fbee068b78955bd76c19a3e0f",
    "identity007.obj": "ba38037151277b94e2b6b9b9800275d92d2c0aa8d61057b0718c9d7b90fffc44",
    "identity008.obj": "b03543b783a15c1d28c5a384cd93657eda915227756780f682bc7370cd94ce1d",
    "identity009.obj": "0cbb5ca5db9c61fa91df8d1c04b9b383b40d797032ca3f5a28a234d495e31b54",
    "jawOpen.obj": "8d84355e10f48b05550980cee385bcd426f4797090da76a20de0535bb2f99f4a",
    "mouthSmile_L.obj": "91794e73cef330f1c7d1f4541723544708536b39d5dd6ed35fd8f83f676b7af4",
    "mouthSmile_R.obj": "3fb3de3da9f8358edbb933a65ce6e44c25a2501f30dcb240daea725b68adac84",
    "vertex_indices.json": "4f9b35306299980dd46bee4a6b79bb95dfae1953693b74b35a64f7febfd081a5",
}

NEUTRAL_FILE = "generic_neutral_mesh.obj"
INDICES_FILE = "vertex_indices.json"
#: Identity modes upstream (identity000..099).
N_UPSTREAM_IDENTITY = 100
#: Vertex and polygon counts of ICT's topology (README table, "All").
ICT_N_VERTICES = 26719
ICT_N_POLYGONS = 26384
#: Vertices [0, FACE_VERTICES) are "Face" + "Head and Neck" (README table, geometries #0-#1).
FACE_VERTICES = 11248
CM_TO_MM = 10.0
#: ``region`` values: "face" (one skin surface) or "full" (every ICT geometry).
REGIONS = ("face", "full")
#: Bump when the conversion changes: cached conversions of older versions are not reused.
CONVERTER_VERSION = 1

_IDENTITY_RE = re.compile(r"identity(\d{3})\.obj")


# ------------------------------------------------------------------------------ reading
@dataclasses.dataclass
class _IctSource:
    """The raw content of a FaceXModel folder, in ICT's units (cm)."""

    folder: Path
    neutral: ObjMesh
    landmarks: np.ndarray  # (68,) int
    identity_files: list[str]
    identity_offsets: list[np.ndarray]  # (V,3) cm each
    expression_names: list[str]
    expression_offsets: list[np.ndarray]
    missing_expressions: list[str]
    ignored_identity_files: list[str]


def _read_mesh_file(path: Path) -> ObjMesh:
    if not path.is_file():
        raise ModelFileError(path, "missing from the ICT-FaceKit FaceXModel folder")
    try:
        return read_obj(path, texcoords=False)
    except InputFileError as error:
        raise ModelFileError(error.path, error.message) from None


def _read_indices(folder: Path) -> dict:
    path = folder / INDICES_FILE
    if not path.is_file():
        raise ModelFileError(path, "missing from the ICT-FaceKit FaceXModel folder")
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(path, f"not valid JSON ({error})") from None
    if not isinstance(table, dict):
        raise ModelFileError(path, "expected a JSON object")
    landmarks = table.get("idx_to_landmark_verts")
    if not (isinstance(landmarks, list) and len(landmarks) == N_LANDMARKS
            and all(isinstance(i, int) and 0 <= i < FACE_VERTICES for i in landmarks)):
        raise ModelFileError(path, f"'idx_to_landmark_verts' must list {N_LANDMARKS} face vertex indices")
    names = table.get("expressions", [])
    if not (isinstance(names, list) and all(isinstance(n, str) and re.fullmatch(r"\w+", n) for n in names)):
        raise ModelFileError(path, "'expressions' must be a list of blendshape names")
    return table


def _offset(folder: Path, name: str, neutral: ObjMesh) -> np.ndarray:
    """``mesh - neutral`` (V,3) in cm for ``folder/name``, after checking the topology."""
    path = folder / name
    mesh = _read_mesh_file(path)
    if mesh.n_vertices != neutral.n_vertices:
        raise ModelFileError(
            path, f"has {mesh.n_vertices} vertices, the neutral mesh has {neutral.n_vertices} (truncated?)"
        )
    if mesh.faces.shape != neutral.faces.shape or not np.array_equal(mesh.faces, neutral.faces):
        raise ModelFileError(path, "its faces differ from the neutral mesh's (not ICT-FaceKit topology)")
    return mesh.vertices - neutral.vertices


def _identity_files(folder: Path) -> tuple[list[str], list[str]]:
    """Contiguous ``identity000.obj, identity001.obj, ...`` present, and the others ignored."""
    numbers = sorted(int(m.group(1)) for p in folder.iterdir() if (m := _IDENTITY_RE.fullmatch(p.name)))
    used = []
    while len(used) in numbers:
        used.append(len(used))
    ignored = [f"identity{n:03d}.obj" for n in numbers if n not in used]
    return [f"identity{n:03d}.obj" for n in used], ignored


def _read_folder(source_dir: str | Path) -> _IctSource:
    folder = Path(source_dir)
    if not folder.is_dir():
        raise ModelFileError(folder, "not a folder (expected ICT-FaceKit's FaceXModel/)")
    neutral = _read_mesh_file(folder / NEUTRAL_FILE)
    if neutral.n_vertices != ICT_N_VERTICES or len(neutral.polygon_sizes) != ICT_N_POLYGONS:
        raise ModelFileError(
            folder / NEUTRAL_FILE,
            f"has {neutral.n_vertices} vertices and {len(neutral.polygon_sizes)} polygons; ICT-FaceKit's "
            f"topology has {ICT_N_VERTICES} and {ICT_N_POLYGONS} (truncated or another mesh?)",
        )
    table = _read_indices(folder)
    identity_files, ignored = _identity_files(folder)
    if not identity_files:
        raise ModelFileError(folder / "identity000.obj", "missing: at least one identity mode is needed")
    names = [n for n in table.get("expressions", []) if (folder / f"{n}.obj").is_file()]
    return _IctSource(
        folder=folder,
        neutral=neutral,
        landmarks=np.asarray(table["idx_to_landmark_verts"], dtype=np.int64),
        identity_files=identity_files,
        identity_offsets=[_offset(folder, f, neutral) for f in identity_files],
        expression_names=names,
        expression_offsets=[_offset(folder, f"{n}.obj", neutral) for n in names],
        missing_expressions=[n for n in table.get("expressions", []) if n not in names],
        ignored_identity_files=ignored,
    )


# ------------------------------------------------------------------------------ assembling
def _check_frame(path: Path, mean_mm: np.ndarray, landmarks: np.ndarray) -> None:
    """Refuse a neutral mesh whose axes are not +x subject's left, +y up, +z forward."""
    points = mean_mm[landmarks]
    problems = []
    if int(np.argmax(points[:, 2])) != 30:
        problems.append("the nose tip (iBUG 31) is not the landmark of largest z")
    if not points[45, 0] > 0 > points[36, 0]:
        problems.append("the subject's left eye corner (iBUG 46) is not at +x")
    if not points[17:27, 1].mean() > points[48:68, 1].mean():
        problems.append("the brows are not above the mouth (+y up)")
    if problems:
        raise ModelFileError(path, "unexpected axes: " + "; ".join(problems))


def _describe_origin(mean_mm: np.ndarray, landmarks: np.ndarray) -> str:
    nose = mean_mm[landmarks[30]]
    return (
        f"ICT-FaceKit's own origin, on the mid-sagittal plane (x = 0): {nose[2]:.0f} mm behind the "
        f"nose tip (iBUG 31) and {nose[1]:.0f} mm below it, inside the head at about the height of "
        f"the nose tip"
    )


def _normalized_columns(offsets: list[np.ndarray], keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm basis ``(Vk,3,K)`` and std ``(K,)`` (mm) from mm offsets restricted to ``keep``."""
    if not offsets:
        return empty_basis(int(keep.size))
    stacked = np.stack([o[keep] * CM_TO_MM for o in offsets], axis=-1)  # (Vk,3,K) mm
    norms = np.linalg.norm(stacked.reshape(-1, stacked.shape[-1]), axis=0)
    basis = stacked / np.where(norms > 0, norms, 1.0)
    return basis.astype(np.float32), norms.astype(np.float32)


def _region_indices(neutral: ObjMesh, region: str) -> tuple[np.ndarray, np.ndarray]:
    """Kept vertex indices and the re-indexed triangles whose corners are all kept."""
    _check_region(region)
    n = neutral.n_vertices if region == "full" else FACE_VERTICES
    keep = np.arange(n)
    remap = np.full(neutral.n_vertices, -1, dtype=np.int64)
    remap[keep] = np.arange(n)
    faces = remap[neutral.faces]
    return keep, faces[np.all(faces >= 0, axis=1)]


def _assemble(src: _IctSource, region: str) -> MorphableModel:
    keep, faces = _region_indices(src.neutral, region)
    mean = src.neutral.vertices[keep] * CM_TO_MM
    _check_frame(src.folder / NEUTRAL_FILE, mean, src.landmarks)
    identity_basis, identity_std = _normalized_columns(src.identity_offsets, keep)
    expression_basis, expression_std = _normalized_columns(src.expression_offsets, keep)
    remap = np.full(src.neutral.n_vertices, -1, dtype=np.int64)
    remap[keep] = np.arange(keep.size)
    landmarks = remap[src.landmarks].astype(np.int32)
    warnings = []
    if not src.expression_names:
        warnings.append("no expression blendshape files found: 0 expression modes")
    zero = [n for n, s in zip(src.expression_names, expression_std) if s == 0]
    if zero:
        warnings.append(f"expressions with no motion in region {region!r} (std 0): {', '.join(zero)}")
    n_id, n_ex = len(src.identity_files), len(src.expression_names)
    model = MorphableModel(
        name="ict",
        mean=mean,
        faces=faces,
        identity_basis=identity_basis,
        identity_std=identity_std,
        expression_basis=expression_basis,
        expression_std=expression_std,
        **constant_reflectance(int(keep.size)),  # replaced by the transferred reflectance below
        landmark_indices=landmarks,
        version=f"ict-facekit@{ICT_COMMIT[:7]} ({n_id} identity, {n_ex} expression modes, region {region})",
        origin=_describe_origin(mean, landmarks),
        reflectance_source="none",
        source=str(src.folder),
        named_landmarks={"nose_tip": int(landmarks[30]), "left_eye_outer_corner": int(landmarks[45]),
                         "right_eye_outer_corner": int(landmarks[36]), "chin": int(landmarks[8])},
        metadata={
            "upstream": "https://github.com/ICT-VGL/ICT-FaceKit",
            "commit": ICT_COMMIT,
            "license": "MIT",
            "converter_version": CONVERTER_VERSION,
            "region": region,
            "n_vertices_upstream": int(src.neutral.n_vertices),
            "kept_vertices": [0, int(keep.size)],
            "quads_split": int(src.neutral.n_split),
            "units": "converted from cm to mm (x10)",
            "frame": "ICT axes already match the head frame (+x subject's left, +y up, +z forward): no rotation",
            "identity_files": src.identity_files,
            "identity_modes": "identityNNN.obj - neutral; taken as PCA modes scaled to 1 std "
                              "(orthogonal, decreasing norms): unit basis, std = norm in mm",
            "ignored_identity_files": src.ignored_identity_files,
            "expression_names": src.expression_names,
            "expression_modes": "<name>.obj - neutral blendshapes: unit basis, std = norm in mm, "
                                "coefficient 1 = the full blendshape",
            "missing_expressions": src.missing_expressions,
            "warnings": warnings,
        },
    )
    return with_synthetic_reflectance(model)


def convert_ict(source_dir: str | Path, out_npz: str | Path | None = None, *, region: str = "face") -> MorphableModel:
    """Convert an ICT-FaceKit ``FaceXModel/`` folder into a :class:`MorphableModel` (mm, head frame).

    Uses ``generic_neutral_mesh.obj``, the contiguous ``identity000.obj, identity001.obj, ...``
    present (at least one), the expressions of ``vertex_indices.json`` whose OBJ is present (the
    missing ones are listed in ``metadata["missing_expressions"]``; none at all is allowed and
    noted in ``metadata["warnings"]``), and ``idx_to_landmark_verts`` for the 68 landmarks.
    Quads are split into triangles (fan, winding kept: counter-clockwise seen from outside).
    See the module docstring for units, frame, origin and how modes are scaled.

    Args:
        source_dir: the ``FaceXModel`` folder.
        out_npz: if given, the model is also saved there (atomically).
        region: ``"face"`` (default) keeps ICT's "Face" and "Head and Neck" geometries, vertices
            [0, 11248), and the triangles among them: one connected skin surface, which is what
            benchmarks (closest-point distances, ICP) and renderers need; the eyeballs, teeth,
            gums, lacrimal and occlusion shells and eyelash strips of the full model float inside
            or in front of that surface and would corrupt depth and distances. ``"full"`` keeps
            all 26719 vertices.

    Returns:
        The model (V = 11248 for "face", 26719 for "full").

    Raises:
        ModelFileError: missing folder, neutral mesh, identity000.obj or vertex_indices.json; a
            truncated or malformed OBJ/JSON; an OBJ of another topology (the message names the file).
        FacebenchError: unknown region.
    """
    _check_region(region)
    model = _assemble(_read_folder(source_dir), region)
    if out_npz is not None:
        model.save(out_npz)
    return model


def _check_region(region: str) -> None:
    if region not in REGIONS:
        raise FacebenchError(f"unknown ICT region {region!r}; choose one of {', '.join(REGIONS)}")


# ------------------------------------------------------------------------------ loading, cache
def ict_cache_dir() -> Path:
    """``cache_dir()/ict``: the fetched files, converted models and the fetch manifest."""
    return cache_dir("ict")


def _fetched_model_path(region: str, root: Path | None = None) -> Path:
    return (root or ict_cache_dir()) / f"ict-{region}.npz"


def _source_key(folder: Path, region: str) -> str:
    """Hash of the folder's model files (names, sizes, mtimes), the region and converter version."""
    entries = []
    for path in sorted(folder.iterdir()):
        if path.suffix in (".obj", ".json") and path.is_file():
            stat = path.stat()
            entries.append([path.name, stat.st_size, stat.st_mtime_ns])
    from facebench.models.procedural import SYNTHETIC_MODEL_SHA256  # reflectance comes from it

    blob = json.dumps({"files": entries, "region": region, "converter": CONVERTER_VERSION,
                       "synthetic": SYNTHETIC_MODEL_SHA256,
                       "folder": str(folder.resolve())})
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def load_ict(path: str | Path | None = None, *, region: str = "face") -> MorphableModel:
    """Load ICT-FaceKit Light as a :class:`MorphableModel` (see :func:`convert_ict`).

    Args:
        path: a ``FaceXModel`` folder (converted once, then read from
            ``cache_dir()/ict/<hash of the files' names, sizes and mtimes>.npz``), a ``.npz``
            written by facebench, or None for the model made by :func:`fetch_ict`.
        region: "face" or "full" (see :func:`convert_ict`); ignored for a ``.npz`` path.

    Raises:
        FacebenchError: no path and nothing fetched yet; unknown region.
        ModelFileError: unreadable folder, files or ``.npz``.
    """
    _check_region(region)
    if path is None:
        fetched = _fetched_model_path(region)
        if not fetched.is_file():
            raise FacebenchError(
                "ICT-FaceKit is not fetched: run 'facebench models fetch ict' or give --path FaceXModel/"
            )
        return MorphableModel.load_npz(fetched)
    path = Path(path)
    if path.is_file() and path.suffix == ".npz":
        return MorphableModel.load_npz(path)
    if not path.is_dir():
        raise ModelFileError(path, "expected ICT-FaceKit's FaceXModel/ folder or a facebench .npz")
    cached = ict_cache_dir() / f"{_source_key(path, region)}.npz"
    if cached.is_file():
        try:
            return MorphableModel.load_npz(cached)
        except ModelFileError:
            cached.unlink(missing_ok=True)  # a damaged cache entry is rebuilt
    return convert_ict(path, cached, region=region)


# ------------------------------------------------------------------------------ fetching
def _upstream_files(expressions: list[str], n_identity: int) -> list[str]:
    identity = [f"identity{i:03d}.obj" for i in range(n_identity)]
    return [NEUTRAL_FILE, *identity, *[f"{n}.obj" for n in expressions]]


def _fetch_file(base_url: str, name: str, folder: Path, allow_unpinned: bool, known: dict) -> str:
    """Download one file unless a verified copy is there; return its sha256."""
    target = folder / name
    expected = ICT_SHA256.get(name)
    if target.is_file():
        have = file_sha256(target)
        if have == (expected or known.get(name)):
            return have
    if expected is None and not allow_unpinned:
        raise FacebenchError(f"{name} has no pinned sha256: fetch it with allow_unpinned=True")
    try:
        return download(base_url + name, target, expected)
    except DownloadHashError as error:
        raise ModelFileError(error.path, error.message) from None


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        return manifest if isinstance(manifest, dict) else {}
    except (OSError, ValueError):
        return {}



def fetch_ict(
    *,
    source: str | Path | None = None,
    base_url: str = DEFAULT_BASE_URL,
    dest: str | Path | None = None,
    n_identity: int = N_UPSTREAM_IDENTITY,
    expressions: list[str] | None = None,
    allow_unpinned: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Download ICT-FaceKit Light at :data:`ICT_COMMIT` and convert it into the cache.

    Files ``<base_url><file>`` are streamed to a temporary file, checked against
    :data:`ICT_SHA256` and renamed into ``dest/FaceXModel/`` (files already there with the right
    hash are not downloaded again). ``vertex_indices.json`` comes first (it lists the expressions).
    Files without a pinned hash are skipped unless ``allow_unpinned``; then they are accepted and
    their sha256 recorded in ``dest/manifest.json`` for a maintainer to pin. Both regions are then
    converted to ``dest/ict-face.npz`` and ``dest/ict-full.npz`` (what :func:`load_ict` reads with
    no path); the model's ``metadata["fetch"]`` says which files were used and which were skipped.

    Args:
        source: a local ``FaceXModel`` folder to convert instead of downloading.
        base_url: where the files are (``https://...``, or ``file://`` for a local mirror).
        dest: the cache folder (default ``cache_dir()/ict``).
        n_identity: identity modes to fetch (identity000 .. n_identity-1), at most 100.
        expressions: blendshape names to fetch (default: all listed in vertex_indices.json).
        allow_unpinned: also accept files that have no pinned sha256.
        progress: optional ``callback(done_files, total_files)``.

    Returns:
        The path of the converted face-region model (``dest/ict-face.npz``).

    Raises:
        ModelFileError: a file whose sha256 differs from the pinned one (it is deleted).
        FacebenchError: a download failure; ModelFileError for unreadable files.
    """
    root = Path(dest) if dest is not None else ict_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    if not 1 <= n_identity <= N_UPSTREAM_IDENTITY:
        raise FacebenchError(f"n_identity must be in 1..{N_UPSTREAM_IDENTITY}, got {n_identity}")
    if source is not None:
        folder, record = Path(source), {"source": str(source)}
    else:
        folder, record = _fetch_files(root, base_url, n_identity, expressions, allow_unpinned, progress)
    src = _read_folder(folder)
    out = None
    for region in REGIONS:
        model = _assemble(src, region)
        model = dataclasses.replace(model, metadata={**model.metadata, "fetch": record})
        path = model.save(_fetched_model_path(region, root))
        out = path if region == "face" else out
    return out


def _fetch_files(root: Path, base_url: str, n_identity: int, expressions: list[str] | None,
                 allow_unpinned: bool, progress) -> tuple[Path, dict]:
    folder = root / "FaceXModel"
    base_url = base_url if base_url.endswith("/") else base_url + "/"
    manifest_path = root / "manifest.json"
    known = _read_manifest(manifest_path).get("sha256", {})
    hashes = {INDICES_FILE: _fetch_file(base_url, INDICES_FILE, folder, allow_unpinned, known)}
    upstream = _read_indices(folder).get("expressions", [])
    names = upstream if expressions is None else list(expressions)
    wanted = _upstream_files(names, n_identity)
    files = [f for f in wanted if allow_unpinned or f in ICT_SHA256]
    skipped = [f for f in wanted if f not in files]
    total = len(files) + 1
    if progress is not None:
        progress(1, total)
    for done, name in enumerate(files, start=2):
        hashes[name] = _fetch_file(base_url, name, folder, allow_unpinned, known)
        if progress is not None:
            progress(done, total)
    record = {
        "base_url": base_url,
        "commit": ICT_COMMIT,
        "files": sorted(hashes),
        "pinned_only": not allow_unpinned,
        "skipped_unpinned": skipped,
        "unpinned_accepted": sorted(f for f in hashes if f not in ICT_SHA256),
    }
    write_json({**record, "sha256": {**known, **hashes}}, manifest_path)
    return folder, record
