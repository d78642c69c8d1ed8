"""Per-scan time of the scan protocol: landmark fit + ICP + cropped scan-to-surface distances.

Ground truth: a random face of the procedural model (fixed seeds), midpoint-subdivided once
(57,681 vertices, 114,400 triangles). Prediction: another topology and another shape: the ground
truth's coefficients plus noise (0.3 std), subdivided and then decimated by open3d's
``simplify_quadric_decimation`` to 60,000 triangles (~30k vertices), moved by a random similarity
(scale 0.8–1.2, rotation up to 30°, 100 mm shift); its 68 landmarks are its own landmark positions.
Protocol: similarity, landmarks + point-to-plane ICP (scale loop), 95 mm sphere around the nose
tip, distances from each kept ground-truth vertex to the predicted surface.

Every scan pays for its own prediction (BVH build and ICP target), as in scoring. Cases on the
same scans: ``95mm`` (the protocol above, the current final ICP stage ``"feature"``), ``95mm-1.1``
(the same with 1.1's final stage ``"exact"``, a same-run reference), ``now`` (the ``now`` preset:
NoW's seven landmarks and crop, every cropped scan vertex in the ICP, tolerance 1e-6) and
``now@1.0`` (its 1.1-era stage). Prints, per case, the median wall time per phase over the scans
and the process CPU time of the whole call (on a loaded machine wall time is mostly waiting for a
core: compare CPU time, or ratios within one run), and, as same-run references on the same cropped
points: open3d's BVH build and float32 closest-point queries alone (the floor of our scheme: as many
query points as the case made, counted, no float64 refinement, no ICP algebra), a naive exact
closest point (numpy, every triangle, on a subset, extrapolated) and a KD-tree vertex-to-vertex
distance (scipy ``cKDTree``: build + query; not a surface distance, biased up).

    python perf/bench_scan_protocol.py [--scans 5] [--repeats 3] [--threads 2] [--icp-points 5000]

``--presets`` instead scores a MICC-like scan dataset end to end (``facebench.benchmark.scoring.score``:
validation, reading each scan from the file, alignment, distances) under ``micc-ramon2019``,
``micc-95mm`` and ``facewarehouse-ramon2019``: each scan is a procedural face subdivided once and
cropped to the vertices in front of z = 40 mm (~40k vertices, like a cleaned MICC scan), the
prediction a 14.5k-vertex procedural face of other coefficients under a random similarity. Prints
seconds per scan for each preset.

    python perf/bench_scan_protocol.py --presets [--scans 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np


def faces_for(mesh) -> np.ndarray:
    return np.asarray(mesh.triangles, dtype=np.int64)


def make_scan(model, rng: np.random.Generator):
    """Ground truth (57k vertices), prediction (~30k vertices, other topology) and their landmarks."""
    import open3d as o3d
    from scipy.spatial.transform import Rotation

    identity = rng.standard_normal(model.n_identity)
    expression = 0.7 * rng.standard_normal(model.n_expression)
    gt_coarse = model.shape(identity, expression).astype(np.float64)
    gt_mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(gt_coarse),
                                        o3d.utility.Vector3iVector(np.array(model.faces, dtype=np.int32)))
    gt_mesh = gt_mesh.subdivide_midpoint(1)
    gt_landmarks = gt_coarse[model.landmark_indices]

    pred_coarse = model.shape(identity + 0.3 * rng.standard_normal(model.n_identity),
                              expression + 0.3 * rng.standard_normal(model.n_expression)).astype(np.float64)
    pred_mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(pred_coarse),
                                          o3d.utility.Vector3iVector(np.array(model.faces, dtype=np.int32)))
    pred_mesh = pred_mesh.subdivide_midpoint(1).simplify_quadric_decimation(60_000)
    axis = rng.standard_normal(3)
    rotation = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.radians(rng.uniform(0, 30))).as_matrix()
    scale = rng.uniform(0.8, 1.2)
    shift = rng.standard_normal(3)
    shift *= 100.0 / np.linalg.norm(shift)

    def move(x):
        return scale * x @ rotation.T + shift

    return {
        "gt_vertices": np.asarray(gt_mesh.vertices), "gt_faces": faces_for(gt_mesh), "gt_landmarks": gt_landmarks,
        "pred_vertices": move(np.asarray(pred_mesh.vertices)), "pred_faces": faces_for(pred_mesh),
        "pred_landmarks": move(pred_coarse[model.landmark_indices]),
    }


def brute_force_distances(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Naive exact point-to-surface distance: every point against every triangle (numpy, chunked)."""
    from facebench.benchmark.surface_distance import closest_points_on_triangles

    a, b, c = (vertices[faces[:, k]] for k in range(3))
    out = np.empty(len(points))
    for i, p in enumerate(points):
        q = np.broadcast_to(p, a.shape)
        out[i] = np.sqrt(np.min(np.sum((closest_points_on_triangles(q, a, b, c) - q) ** 2, axis=1)))
    return out


def bench_presets(n_scans: int) -> None:
    """Seconds per scan of ``score`` under each real-data preset on a MICC-like file (docstring)."""
    import tempfile
    from pathlib import Path

    import open3d as o3d

    import facebench.models as fm
    from facebench.benchmark.landmark_sets import landmark_indices_for
    from facebench.benchmark.protocols import get_protocol
    from facebench.benchmark.scoring import score
    from facebench.benchmark.submission_writer import write_submission
    from facebench.datasets.scan_dataset import ScanDatasetWriter, ScanSample
    from facebench.landmarks import SCAN_LANDMARK_SETS

    model = fm.load("synthetic")
    rng = np.random.default_rng(2024)
    faces = np.array(model.faces, np.int32)
    with tempfile.TemporaryDirectory() as tmp:
        files, predictions = {}, []
        scans = []
        for _ in range(n_scans):
            identity = rng.standard_normal(model.n_identity)
            x = np.array(model.shape(identity, 0.7 * rng.standard_normal(model.n_expression)), np.float64)
            mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(x), o3d.utility.Vector3iVector(faces))
            fine = mesh.subdivide_midpoint(1)
            v, f = np.asarray(fine.vertices), np.asarray(fine.triangles, np.int64)
            keep = v[:, 2] > 40.0
            remap = np.full(len(v), -1)
            remap[keep] = np.arange(keep.sum())
            f = remap[f]
            scans.append((v[keep], f[(f >= 0).all(axis=1)], remap))
            pred = np.array(model.shape(identity + 0.3 * rng.standard_normal(model.n_identity)), np.float64)
            angle = np.radians(rng.uniform(0, 30))
            axis = rng.standard_normal(3)
            axis /= np.linalg.norm(axis)
            K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
            R = np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K
            predictions.append(rng.uniform(0.9, 1.1) * pred @ R.T + 100.0 * rng.standard_normal(3))
        for kind, lm_set in (("micc", "micc4"), ("facewarehouse", "facewarehouse6")):
            li = landmark_indices_for(model, lm_set)
            path = Path(tmp) / f"{kind}.h5"
            with ScanDatasetWriter(path, kind=kind, landmark_names=list(SCAN_LANDMARK_SETS[lm_set]), image_size=8,
                                   landmark_set=lm_set) as writer:
                for i, (v, f, remap) in enumerate(scans):
                    writer.add(ScanSample(id=f"s{i}", image=np.zeros((8, 8, 3), np.uint8), face_box=np.zeros(4),
                                          frame_size=(8, 8), vertices=v, faces=f, landmark_indices=remap[li]))
            sub = write_submission(Path(tmp) / f"{kind}_sub.h5", [f"s{i}" for i in range(n_scans)],
                                   np.stack(predictions), method="bench", faces=faces, landmark_indices=li)
            files[kind] = (path, sub)
        print(f"{n_scans} scans of {np.mean([len(s[0]) for s in scans]):.0f} vertices on average "
              f"(prediction {model.n_vertices} vertices, other coefficients, random similarity)")
        for name in ("micc-ramon2019", "micc-95mm", "facewarehouse-ramon2019"):
            protocol = get_protocol(name)
            path, sub = files[protocol.dataset_kind]
            score(path, sub, protocol)  # warm-up
            start = time.perf_counter()
            result = score(path, sub, protocol)
            seconds = time.perf_counter() - start
            print(f"  {name:<26} {seconds / n_scans:6.3f} s per scan (total {seconds:.2f} s; evaluate "
                  f"{result.summary['timings_s']['evaluate'] / n_scans:.3f} s/scan; headline "
                  f"{result.summary['headline']['mean']:.3f} mm)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for open3d (default: as set)")
    parser.add_argument("--brute-points", type=int, default=100)
    parser.add_argument("--icp-points", type=int, default=5000, help="ScanAlignmentParams.icp_max_points")
    parser.add_argument("--presets", action="store_true", help="score a MICC-like file under the real-data presets")
    args = parser.parse_args()
    if args.threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # read by open3d's OpenMP at import
    if args.presets:
        bench_presets(args.scans)
        return

    import open3d as o3d

    import facebench.models as fm
    from facebench.benchmark.align import ScanAlignmentParams
    from facebench.benchmark.protocols import get_protocol
    from facebench.benchmark.scoring import _scan_params
    from facebench.landmarks import NOW7_IBUG68

    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    model = fm.load("synthetic")
    rng = np.random.default_rng(2024)
    scans = [make_scan(model, rng) for _ in range(args.scans)]
    now7 = list(NOW7_IBUG68)
    now_scans = [{**scan, "gt_landmarks": scan["gt_landmarks"][now7], "pred_landmarks": scan["pred_landmarks"][now7]}
                 for scan in scans]
    print(f"ground truth {len(scans[0]['gt_vertices'])} vertices / {len(scans[0]['gt_faces'])} triangles; "
          f"prediction ~{len(scans[0]['pred_vertices'])} vertices / {len(scans[0]['pred_faces'])} triangles; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} cores, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    p95 = ScanAlignmentParams(with_scale=True, icp=True, method="point_to_plane", crop_radius_mm=95.0,
                              icp_max_points=args.icp_points)
    cases = {
        "95mm": (scans, p95),
        "95mm-1.1": (scans, dataclasses.replace(p95, final="exact")),
        "now": (now_scans, _scan_params(get_protocol("now"))),
        "now@1.0": (now_scans, _scan_params(get_protocol("now@1.0"))),
    }
    for i, (name, (case_scans, params)) in enumerate(cases.items()):
        bench_case(name, case_scans, params, args.repeats, brute_points=args.brute_points if i == 0 else 0)
    print(f"\nload average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def bench_case(name: str, scans: list, params, repeats: int, brute_points: int) -> None:
    """Time one protocol case on the scans and compare it with same-run references (module docstring)."""
    import open3d as o3d
    from scipy.spatial import cKDTree

    from facebench.benchmark import surface_distance
    from facebench.benchmark.align import align_and_measure

    print(f"\n=== {name}: {params}")
    align_and_measure(**scans[0], params=params)  # warm-up (imports, first BVH)
    phases: dict[str, list[float]] = {}
    cpu: list[float] = []
    results = []
    queried: list[int] = []  # closest-point query points per call (counted)
    plain = surface_distance.TriangleSurface._query

    def counting(self, p):
        queried[-1] += len(p)
        return plain(self, p)

    surface_distance.TriangleSurface._query = counting
    try:
        for scan in scans:
            for _ in range(repeats):
                queried.append(0)
                clock = time.process_time()
                result = align_and_measure(**scan, params=params)
                cpu.append(time.process_time() - clock)
                for phase, seconds in result.timings.items():
                    phases.setdefault(phase, []).append(seconds)
            results.append(result)
    finally:
        surface_distance.TriangleSurface._query = plain
    print(f"per scan (median of {len(scans)} scans x {repeats} repeats), wall ms:")
    for phase, values in phases.items():
        print(f"  {phase:<10} {1000 * np.median(values):8.1f}")
    print(f"  {'CPU':<10} {1000 * np.median(cpu):8.1f}   (process time of the whole call, every thread)")
    for i, r in enumerate(results):
        print(f"  scan {i}: kept {len(r.gt_indices)} gt vertices, mean {r.mean_mm:.6f} mm, median "
              f"{r.median_mm:.6f} mm, scale {r.similarity.s:.6f}, ICP steps {r.icp.scale_steps} "
              f"({'converged' if r.icp.scale_converged else 'NOT converged'}), fitness {r.icp.fitness:.3f}")

    # same-run references on the last scan's aligned, cropped points
    scan, r = scans[-1], results[-1]
    points = r.similarity.inverse().apply(scan["gt_vertices"][r.gt_indices])  # in the prediction's frame
    distance_s = float(np.median(phases["distance"]))
    total_s = float(np.median(phases["total"]))
    # the floor: open3d's BVH build and its float32 closest-point queries alone (no refinement, no
    # ICP algebra), for as many queries as the protocol makes (ICP steps x ICP points + distances)
    vertices, faces = scan["pred_vertices"], scan["pred_faces"]
    origin = vertices.mean(axis=0)
    builds, queries, floor_cpu = [], [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(vertices - origin, dtype=np.float32)),
                            o3d.core.Tensor(np.ascontiguousarray(faces, dtype=np.uint32)))
        scene.compute_closest_points(o3d.core.Tensor(np.zeros((1, 3), dtype=np.float32)))
        builds.append(time.perf_counter() - start)
        build_cpu = time.process_time() - cpu_start
        start, cpu_start = time.perf_counter(), time.process_time()
        scene.compute_closest_points(o3d.core.Tensor(np.ascontiguousarray(points - origin, dtype=np.float32)))
        queries.append(time.perf_counter() - start)
        floor_cpu.append((build_cpu, time.process_time() - cpu_start))
    build_s, query_s = float(np.median(builds)), float(np.median(queries))
    n_queries = int(np.median(queried))
    floor_s = build_s + query_s * n_queries / len(points)
    floor_cpu_s = float(np.median([b + q * n_queries / len(points) for b, q in floor_cpu]))
    print(f"\nsame-run references on {len(points)} cropped points (prediction frame):")
    print(f"  open3d BVH build alone     {1000 * build_s:9.1f} ms   (our prepare x{np.median(phases['prepare']) / build_s:.2f})")
    print(f"  open3d queries alone       {1000 * query_s:9.1f} ms   (our distance phase x{distance_s / query_s:.2f})")
    print(f"  open3d floor, whole scan   {1000 * floor_s:9.1f} ms   build + {n_queries} query points (the median "
          f"call's count: ICP and distances); our whole scan x{total_s / floor_s:.2f}")
    print(f"  open3d floor, CPU          {1000 * floor_cpu_s:9.1f} ms   (process time, same count); our whole scan's "
          f"CPU x{np.median(cpu) / floor_cpu_s:.2f}")
    if brute_points:
        subset = np.random.default_rng(0).choice(len(points), size=min(brute_points, len(points)), replace=False)
        start = time.perf_counter()
        brute = brute_force_distances(points[subset], vertices, faces)
        brute_s = (time.perf_counter() - start) * len(points) / len(subset)
        ours = r.gt_distances / r.similarity.s
        print(f"  naive brute force (exact)  {1000 * brute_s:9.1f} ms   extrapolated from {len(subset)} points; "
              f"x{brute_s / distance_s:.0f} our distance phase, x{brute_s / total_s:.0f} our whole scan; "
              f"max |ours - brute| {np.abs(ours[subset] - brute).max():.2e} mm")
        start = time.perf_counter()
        kd, _ = cKDTree(vertices).query(points)
        kd_s = time.perf_counter() - start
        print(f"  KD-tree vertex-to-vertex   {1000 * kd_s:9.1f} ms   x{kd_s / distance_s:.2f} our distance phase; "
              f"its mean {kd.mean() * r.similarity.s:.3f} mm vs surface {r.mean_mm:.3f} mm (biased up)")

if __name__ == "__main__":
    main()
