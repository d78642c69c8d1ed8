"""Throughput of facebench's rasterizer (rasterize + interpolate) on a face-sized mesh.

Renders 224×224 images of a ~60k-triangle displaced grid shaped like the front of a head
(150 × 190 mm, nose bump) at 600 mm, focal 750 px, B poses with yaw in [-45°, 45°], and prints
images/s of ``rasterize`` + ``interpolate`` (3 channels) on the CPU with 1 and 2 torch threads
(with and without back-face culling; the gradient-free passes run in the C kernel of
:mod:`facebench.render.native`, on one thread), with one process per core of one thread each
(the thread policy's parallelism, each rendering its share of the batch) and the pure-torch
passes alone (``FACEBENCH_NATIVE=0``, same bits) and, as same-run references, Mesa's OpenGL
software renderer (llvmpipe) through moderngl and headless EGL, with its default of one
rendering thread per core and, in a child process, with ``LP_NUM_THREADS=0`` (everything on one
thread, like facebench's default) (``pip install -e ".[bench]"`` plus Debian's ``libegl1
libgl1-mesa-dri``; the lines are skipped with the reason where either is missing), and an open3d
``RaycastingScene`` render of the same images (scene build + one ray per pixel centre). Two
phases: ``idle`` (no load of our own; the load average shows the machine's) and ``loaded`` (one
busy process per usable core, started by this script); within a phase the lines are measured in
interleaved rounds, so ratios compare like with like. On a machine shared with other work, a
process gets CPU time in proportion to its runnable threads: llvmpipe's default (a thread per
core plus the calling thread) then takes a larger share than a one-thread process, which the
one-thread llvmpipe line shows. CUDA lines when available.

    python perf/bench_render.py [--batch 16] [--seconds 3] [--rounds 2] [--phases idle,loaded]
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
from facebench.render import interpolate, native, rasterize

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


def torch_render(cam, faces, K, cull, sync=None, kernel=True):
    """rasterize + interpolate; ``kernel=False``: the pure-torch passes (``FACEBENCH_NATIVE=0``)."""

    def run():
        saved = os.environ.get(native.ENV_VARIABLE)
        os.environ[native.ENV_VARIABLE] = "1" if kernel else "0"
        try:
            fragments = rasterize(cam, faces, K, SIZE, SIZE, cull_backfaces=cull)
            interpolate(fragments, cam)
        finally:
            if saved is None:
                del os.environ[native.ENV_VARIABLE]
            else:
                os.environ[native.ENV_VARIABLE] = saved
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


def moderngl_render(cam: torch.Tensor, faces: np.ndarray, K: np.ndarray):
    """Mesa's OpenGL (llvmpipe on a machine without a GPU) through moderngl and headless EGL: the
    same images as :func:`torch_render` (per image: upload the camera-frame vertices, depth-tested
    draw of a 3-channel float attribute, the camera-frame position, into a 32-bit float target,
    read the pixels back). The projection maps pixel centres as facebench does (pixel x covers
    ``[x - 0.5, x + 0.5]``); llvmpipe's threads: ``LP_NUM_THREADS`` (default: one per core).
    ImportError/RuntimeError (with the reason) where moderngl or EGL is unavailable."""
    import moderngl

    ctx = moderngl.create_standalone_context(backend="egl")
    program = ctx.program(
        vertex_shader="""
            #version 330
            uniform vec4 k;       // fx, fy, cx, cy
            uniform vec2 size;    // W, H
            in vec3 position;     // camera frame, mm (OpenCV)
            out vec3 value;
            void main() {
                float u = k.x * position.x / position.z + k.z;
                float v = k.y * position.y / position.z + k.w;
                float n = 1.0, f = 10000.0, z = position.z;
                value = position;
                gl_Position = vec4((2.0 * (u + 0.5) / size.x - 1.0) * z, (1.0 - 2.0 * (v + 0.5) / size.y) * z,
                                   (f + n) / (f - n) * z - 2.0 * f * n / (f - n), z);
            }""",
        fragment_shader="""
            #version 330
            in vec3 value;
            out vec4 color;
            void main() { color = vec4(value, 1.0); }""",
    )
    program["k"].value = (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))
    program["size"].value = (float(SIZE), float(SIZE))
    fbo = ctx.framebuffer(color_attachments=[ctx.renderbuffer((SIZE, SIZE), 4, dtype="f4")],
                          depth_attachment=ctx.depth_renderbuffer((SIZE, SIZE)))
    index = ctx.buffer(faces.astype(np.uint32).tobytes())
    meshes = [np.ascontiguousarray(c.numpy(), dtype=np.float32) for c in cam]
    vbo = ctx.buffer(reserve=meshes[0].nbytes)
    vao = ctx.vertex_array(program, [(vbo, "3f", "position")], index_buffer=index, index_element_size=4)
    ctx.enable(moderngl.DEPTH_TEST)
    out = np.empty((SIZE, SIZE, 4), np.float32)

    def run():
        fbo.use()
        for vertices in meshes:
            vbo.write(vertices)
            fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
            vao.render(moderngl.TRIANGLES)
            fbo.read_into(out, components=4, dtype="f4")

    return run


def _child(conn, kind: str, env: dict, lo: int, hi: int, batch: int) -> None:  # pragma: no cover - child process
    """A line measured in a child process: renders images ``lo:hi`` of the batch, then answers
    every ``seconds`` it receives with its median per-call images/s (None ends it)."""
    os.environ.update(env)
    torch.set_num_threads(1)
    try:
        vertices, faces_np = head_grid()
        cam = camera_vertices(vertices, batch)[lo:hi]
        K = cv.intrinsics(FOCAL, SIZE)
        if kind == "facebench":
            fn = torch_render(cam, torch.tensor(faces_np), K, False)
        else:
            fn = moderngl_render(cam, faces_np, K)
    except Exception as error:  # no EGL in the child: reported by the parent
        conn.send(f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}")
        return
    conn.send("ready")
    while (seconds := conn.recv()) is not None:
        conn.send(rate(fn, hi - lo, seconds).median)


class ChildLine:
    """``processes`` child processes (spawned, one torch thread each) rendering a share of the batch
    each; calling it measures them all at once and returns the summed images/s."""

    def __init__(self, kind: str, processes: int, batch: int, env: dict | None = None):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        bounds = np.linspace(0, batch, processes + 1).round().astype(int)
        self.conns, self.procs = [], []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            parent, child = context.Pipe()
            proc = context.Process(target=_child, args=(child, kind, env or {}, int(lo), int(hi), batch), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        for conn in self.conns:
            answer = conn.recv()
            if answer != "ready":
                self.close()
                raise RuntimeError(answer)

    def __call__(self, seconds: float) -> float:
        for conn in self.conns:
            conn.send(seconds)
        return sum(conn.recv() for conn in self.conns)

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(None)
            except OSError:
                pass
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()


MGL = "moderngl (Mesa llvmpipe via EGL, default threads)"
MGL_ONE = "moderngl, LP_NUM_THREADS=0 (one thread, child process)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per phase (medians)")
    parser.add_argument("--phases", default="idle,loaded",
                        help="idle (no load of our own) and/or loaded (one busy process per core, started here)")
    args = parser.parse_args()
    vertices, faces_np = head_grid()
    cam = camera_vertices(vertices, args.batch)
    faces = torch.tensor(faces_np)
    K = cv.intrinsics(FOCAL, SIZE)
    coverage = rasterize(cam, faces, K, SIZE, SIZE).mask.float().mean().item()
    print(f"mesh: {len(vertices)} vertices, {len(faces_np)} triangles; {SIZE}x{SIZE}, "
          f"batch {args.batch}, coverage {coverage:.2f}")
    reason = native.unavailable_reason()
    print("C kernel: " + (f"unavailable ({reason}): the facebench lines run the torch passes" if reason else "available"))
    runs = {}  # name -> (torch threads or None, function of seconds -> images/s)
    batch = args.batch

    def here(fn):
        return lambda seconds: rate(fn, batch, seconds).median

    for threads in (1, 2):
        for cull in (False, True):
            runs[f"facebench CPU, {threads} thread(s), cull_backfaces={cull}"] = (threads, here(torch_render(cam, faces, K, cull)))
    cores = usable_cores()
    children = []
    if cores > 1:  # the thread policy's parallelism: worker processes of one thread each
        children.append(ChildLine("facebench", cores, batch))
        runs[f"facebench CPU, {cores} processes x 1 thread"] = (None, children[-1])
    runs["torch passes only (FACEBENCH_NATIVE=0), 1 thread"] = (1, here(torch_render(cam, faces, K, False, kernel=False)))
    try:  # in a child: llvmpipe reads LP_NUM_THREADS once per process
        children.append(ChildLine("moderngl", 1, batch, {"LP_NUM_THREADS": "0"}))
        runs[MGL_ONE] = (None, children[-1])
        runs[MGL] = (None, here(moderngl_render(cam, faces_np, K)))
    except Exception as error:  # ImportError, or no EGL display/driver
        print(f"moderngl lines skipped: {type(error).__name__}: {str(error).strip().splitlines()[0]}")
    try:
        runs["open3d RaycastingScene (build + cast per image)"] = (None, here(open3d_render(cam, faces_np, K)))
    except ImportError:
        print("open3d not installed: no open3d line")
    for phase in args.phases.split(","):
        procs = start_load(usable_cores()) if phase == "loaded" else []
        try:
            print(f"-- {phase}: {len(procs)} busy processes started here; load average (1, 5, 15 min): "
                  "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
            medians: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(args.rounds):  # interleaved: every line sees the same load
                for name, (threads, measure) in runs.items():
                    torch.set_num_threads(threads or 1)
                    medians[name].append(measure(args.seconds / args.rounds))
            value = {name: statistics.median(values) for name, values in medians.items()}
            for name, images in value.items():
                print(f"{name:<60} {images:7.1f} images/s (median of per-call rates)")
            if MGL in value:
                default = value["facebench CPU, 1 thread(s), cull_backfaces=False"]
                best = max(v for k, v in value.items() if k.startswith("facebench"))
                print(f"ratio facebench (1 thread, the default) / moderngl: {default / value[MGL]:.2f}; "
                      f"/ moderngl on one thread: {default / value[MGL_ONE]:.2f}; "
                      f"best facebench / moderngl: {best / value[MGL]:.2f}; "
                      f"torch passes only / moderngl: {value['torch passes only (FACEBENCH_NATIVE=0), 1 thread'] / value[MGL]:.2f}")
            print(f"load average after: {os.getloadavg()[0]:.2f}")
        finally:
            stop_load(procs)
    for child in children:
        child.close()
    if torch.cuda.is_available():
        cam_gpu, faces_gpu = cam.cuda(), faces.cuda()
        for cull in (True, False):
            value = rate(torch_render(cam_gpu, faces_gpu, K, cull, torch.cuda.synchronize), args.batch, args.seconds)
            print(f"facebench CUDA ({torch.cuda.get_device_name()}), cull_backfaces={cull}: {value}")


def _spin() -> None:  # pragma: no cover - runs in the load processes
    while True:
        pass


def start_load(count: int) -> list:
    """``count`` busy processes (pure Python loops): a synthetic load of one per core."""
    import multiprocessing

    procs = [multiprocessing.get_context("fork").Process(target=_spin, daemon=True) for _ in range(count)]
    for proc in procs:
        proc.start()
    time.sleep(1.0)
    return procs


def stop_load(procs: list) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join()


def usable_cores() -> int:
    from facebench.threads import usable_cores as cores

    return cores()


if __name__ == "__main__":
    main()
