"""Throughput of the pure-torch rasterizer (rasterize + interpolate) on a face-sized mesh.

Renders 224×224 images of a ~60k-triangle displaced grid shaped like the front of a head
(150 × 190 mm, nose bump) at 600 mm, focal 750 px, B poses with yaw in [-45°, 45°], and prints
images/s of ``rasterize`` + ``interpolate`` (3 channels) on the CPU with 1 and 2 torch threads
(with and without back-face culling), on CUDA when available, and, as a same-run reference, an
open3d ``RaycastingScene`` render of the same images (scene build + one ray per pixel centre).
Each line gives the overall rate and the per-call median and best (other processes on the
machine slow some calls: compare medians, and note the load average printed around the runs).

    python perf/bench_render.py [--batch 16] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from facebench import conventions as cv
from facebench.render import interpolate, rasterize

SIZE = 224
FOCAL = 750.0
DISTANCE = 600.0


def head_grid(n: int = 175) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``(n², 3)`` mm (head frame) and faces ``(2 (n-1)², 3)`` of a head-like height field."""
    x, y = np.meshgrid(np.linspace(-75, 75, n), np.linspace(-95, 95, n))
    r2 = (x / 80.0) ** 2 + (y / 100.0) ** 2
    z = 90.0 * np.sqrt(np.clip(1.0 - r2, 0.0, None)) - 40.0
    z += 25.0 * np.exp(-((x / 12.0) ** 2 + ((y + 5.0) / 22.0) ** 2))  # nose
    vertices = np.stack((x, y, z), -1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n - 1), np.arange(n - 1), indexing="ij")
    a = (i * n + j).reshape(-1)
    b, c, d = a + 1, a + n + 1, a + n
    # Counter-clockwise seen from +z (outside): x grows with j, y grows with i.
    faces = np.concatenate((np.stack((a, b, c), 1), np.stack((a, c, d), 1)))
    return vertices, faces


def camera_vertices(vertices: np.ndarray, batch: int) -> torch.Tensor:
    yaw = np.linspace(-45.0, 45.0, batch)
    pitch = np.linspace(-10.0, 10.0, batch)[::-1].copy()
    q = cv.pose_from_angles(yaw, pitch, np.zeros(batch))
    t = np.tile([0.0, 0.0, DISTANCE], (batch, 1))
    cam = cv.transform(np.broadcast_to(vertices, (batch, *vertices.shape)), q, t)
    return torch.tensor(cam, dtype=torch.float32)


def rate(fn, images_per_call: int, seconds: float) -> Rate:
    """Images per second of ``fn`` over ``seconds`` (after one warm-up call): overall mean and
    per-call median and best (the median resists load from other processes)."""
    fn()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    return Rate(
        mean=images_per_call * len(times) / total,
        median=images_per_call / statistics.median(times),
        best=images_per_call / min(times),
    )


@dataclass
class Rate:
    """Images per second."""

    mean: float
    median: float
    best: float

    def __str__(self) -> str:
        return f"{self.mean:7.1f} images/s (per call: median {self.median:7.1f}, best {self.best:7.1f})"


def torch_render(cam, faces, K, cull, sync=None):
    def run():
        fragments = rasterize(cam, faces, K, SIZE, SIZE, cull_backfaces=cull)
        interpolate(fragments, cam)
        if sync is not None:
            sync()

    return run


def open3d_render(cam: torch.Tensor, faces: np.ndarray, K: np.ndarray):
    import open3d as o3d

    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    pixels = np.stack((xs, ys, np.ones_like(xs)), -1).reshape(-1, 3).astype(np.float64)
    directions = pixels @ np.linalg.inv(K).T
    rays = o3d.core.Tensor(np.concatenate((np.zeros_like(directions), directions), 1).astype(np.float32))
    triangles = o3d.core.Tensor(faces.astype(np.uint32))
    meshes = [o3d.core.Tensor(c.numpy()) for c in cam]

    def run():
        for vertices in meshes:
            scene = o3d.t.geometry.RaycastingScene()
            scene.add_triangles(vertices, triangles)
            scene.cast_rays(rays)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    vertices, faces_np = head_grid()
    cam = camera_vertices(vertices, args.batch)
    faces = torch.tensor(faces_np)
    K = cv.intrinsics(FOCAL, SIZE)
    coverage = rasterize(cam, faces, K, SIZE, SIZE).mask.float().mean().item()
    print(f"mesh: {len(vertices)} vertices, {len(faces_np)} triangles; {SIZE}x{SIZE}, "
          f"batch {args.batch}, coverage {coverage:.2f}")
    print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    results = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for cull in (True, False):
            value = rate(torch_render(cam, faces, K, cull), args.batch, args.seconds)
            results[(threads, cull)] = value.median
            print(f"torch CPU, {threads} thread(s), cull_backfaces={cull}: {value}")
    if torch.cuda.is_available():
        cam_gpu, faces_gpu = cam.cuda(), faces.cuda()
        for cull in (True, False):
            value = rate(torch_render(cam_gpu, faces_gpu, K, cull, torch.cuda.synchronize), args.batch, args.seconds)
            print(f"torch CUDA ({torch.cuda.get_device_name()}), cull_backfaces={cull}: {value}")
    try:
        reference = rate(open3d_render(cam, faces_np, K), args.batch, args.seconds)
    except ImportError:
        print("open3d not installed: no reference")
        return
    print(f"open3d RaycastingScene (build + cast per image): {reference}")
    best = max(results.values())
    print(f"ratio best torch CPU / open3d (medians): {best / reference.median:.2f}")
    print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
