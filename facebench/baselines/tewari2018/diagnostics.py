"""What a trained multi-level model's correctives learned, and what drives them (diagnostics of the
standard mode, :mod:`facebench.baselines.tewari2018.standard`).

- :func:`gradient_norms`: for each loss term (weighted as in the stage-2 loss) the L2 norm of its
  gradient with respect to each parameter branch (``base``, ``shape_corrective``,
  ``reflectance_corrective``), averaged over a few training batches: which terms pull the
  correctives, and how hard, relative to the data terms.
- :func:`mode_energy`: for an affine corrective space ``M δ + b`` the energy of each corrective mode
  over a dataset, ``E_k = ‖M[:, k]‖² · mean_i δ_ik²`` (shape: mm², reflectance: RGB²), sorted, with
  the energy of the bias ``‖b‖²``; how many of the C modes carry the offsets.
- :func:`offset_renderings`: the per-vertex size of the shape offsets (mm) and of the reflectance
  offsets (RGB) of a few test images, rendered as colours on the model's mean shape in the
  canonical frontal view, next to the ground-truth out-of-span detail the offsets should learn.
- :func:`reflectance_panels`: the true, base-level and final-level reflectance of a few test images
  (the reflectance test's panels).
- :func:`write_diagnostics`: all of them for one run into ``OUT/diagnostics/``
  (``gradient_norms.csv``, ``mode_energy.csv``, ``mode_energy.png``, ``offsets.png``,
  ``reflectance_panels.png``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from facebench.atomic import write_csv, write_figure

__all__ = ["gradient_norms", "mode_energy", "offset_renderings", "reflectance_panels", "write_diagnostics"]


def _load(checkpoint: Path, dataset, device):
    from facebench.baselines.runs import model_for_dataset
    from facebench.baselines.tewari2018.predict import load_multilevel_checkpoint, model_from_checkpoint

    face_model = model_for_dataset(dataset)
    net = model_from_checkpoint(load_multilevel_checkpoint(checkpoint), face_model, path=checkpoint).to(device)
    return net, face_model


def gradient_norms(net, dataset, *, weights=None, batches: int = 4, batch: int = 5, seed: int = 0,
                   device="cpu") -> pd.DataFrame:
    """Rows ``term``, ``weight``, ``value`` (the term, unweighted), and ``grad_<branch>`` (norm of the
    gradient of ``weight · term``), means over ``batches`` batches of ``dataset`` (training mode)."""
    from facebench.baselines.tewari2018.data import TrainingImages, batch_indices
    from facebench.baselines.tewari2018.loss import MultiLevelLoss, MultiLevelWeights

    weights = weights or MultiLevelWeights.finetuning()
    loss_fn = MultiLevelLoss(net, weights, levels=("base", "final")).to(device)
    groups = net.parameter_groups()
    for params in groups.values():
        for p in params:
            p.requires_grad_(True)
    data = TrainingImages(dataset)
    factor = {"reg": weights.w_reg, "rstd": weights.w_rstd, "smo": weights.w_smo, "sta": weights.w_sta,
              "ref": weights.w_ref, "glo": weights.w_glo}
    sums: dict[str, dict[str, float]] = {}
    net.train()
    for k in range(batches):
        images, masks, landmarks = data.get(batch_indices(len(dataset), batch, k, seed), device)
        output = net.decode(net(images))
        _, terms = loss_fn(output, images, landmarks, masks)
        names = list(terms)
        for name in names:
            w = weights.w_photo if name.endswith("/photo") else weights.w_land if name.endswith("/land") else factor[name]
            weighted = w * terms[name]
            row = sums.setdefault(name, {"weight": float(w), "value": 0.0})
            row["value"] += float(terms[name].detach()) / batches
            for branch, params in groups.items():
                needed = [p for p in params if p.requires_grad]
                if not weighted.requires_grad or not needed:
                    grads = []
                else:
                    grads = torch.autograd.grad(weighted, needed, retain_graph=True, allow_unused=True)
                norm = float(torch.sqrt(sum((g.detach() ** 2).sum() for g in grads if g is not None)
                                        or torch.zeros(()))) if grads else 0.0
                row[f"grad_{branch}"] = row.get(f"grad_{branch}", 0.0) + norm / batches
    return pd.DataFrame([{"term": name, **row} for name, row in sums.items()])


def mode_energy(net, dataset, *, device="cpu", limit: int | None = None) -> pd.DataFrame:
    """Rows per corrective space (``shape``, ``reflectance``) and mode ``k`` (sorted by energy, 0 =
    largest): ``energy`` (``‖M[:,k]‖² · mean δ_k²``), ``fraction`` of the modes' total, and a row
    ``k = -1`` with the bias energy ``‖b‖²``. Affine spaces only (empty for ReLU spaces or C = 0)."""
    from facebench.baselines.tewari2018.predict import iterate_reconstructions

    if net.config.n_correctives == 0 or net.config.corrective_kind != "affine":
        return pd.DataFrame(columns=["space", "mode", "energy", "fraction"])
    deltas = {"shape": [], "reflectance": []}
    for _, output, _ in iterate_reconstructions(net, dataset, device=device, limit=limit):
        deltas["shape"].append(output.params.delta_shape.cpu())
        deltas["reflectance"].append(output.params.delta_reflectance.cpu())
    rows = []
    for space, module in (("shape", net.shape_corrective), ("reflectance", net.reflectance_corrective)):
        layer = module.layers[-1]
        columns = (layer.weight.detach().cpu() ** 2).sum(0)
        second = (torch.cat(deltas[space]) ** 2).mean(0)
        energy = (columns * second).numpy().astype(np.float64)
        order = np.argsort(energy)[::-1]
        total = float(energy.sum())
        for rank, k in enumerate(order):
            rows.append({"space": space, "mode": rank, "column": int(k), "energy": float(energy[k]),
                         "fraction": float(energy[k] / total) if total > 0 else float("nan")})
        bias = layer.bias
        rows.append({"space": space, "mode": -1, "column": -1,
                     "energy": float((bias.detach() ** 2).sum()) if bias is not None else 0.0, "fraction": float("nan")})
    return pd.DataFrame(rows)


def _reconstruct_in_canonical_view(net, dataset, face_model, indices: np.ndarray, device):
    """Both levels of ``net`` on the test images ``indices``: ``(images (N, 3, H, W), output, (q, t, K,
    size))``, the last the canonical frontal pose and the image size (px) the panels render with."""
    from facebench.baselines.tewari2018.data import TrainingImages
    from facebench.baselines.tewari2018.evaluations import canonical_pose

    q, t, K = canonical_pose(dataset, face_model)
    size = int(dataset.read("images", 0, 1).shape[1])
    images, _, _ = TrainingImages(dataset).get(indices, device)
    net.eval()
    with torch.no_grad():
        output = net.reconstruct(images)
    return images, output, (q, t, K, size)


def reflectance_panels(net, dataset, face_model, indices, albedo: np.ndarray, *, device="cpu") -> list[dict]:
    """For each test image of ``indices``: ``input`` and the unlit reflectance ``truth`` (``albedo[i]``,
    the true per-vertex reflectance), ``base`` and ``final`` (the levels' predictions) rendered on the
    mean shape in the canonical frontal view, ``(H, W, 3)`` in [0, 1]."""
    from facebench.baselines.tewari2018.evaluations import _render_colors

    indices = np.asarray(indices, np.int64)
    images, output, (q, t, K, size) = _reconstruct_in_canonical_view(net, dataset, face_model, indices, device)
    colours = {"truth": torch.as_tensor(np.asarray(albedo)[indices], dtype=torch.float32),
               "base": output.reflectance_base.cpu(), "final": output.reflectance_final.cpu()}
    rendered = {k: _render_colors(face_model, v.clamp(0, 1), q, t, K, size, background=1.0)[0].numpy()
                for k, v in colours.items()}
    return [{"input": images[b].permute(1, 2, 0).cpu().numpy(), **{k: v[b] for k, v in rendered.items()}}
            for b in range(len(indices))]


def offset_renderings(net, dataset, face_model, indices, *, device="cpu") -> list[dict[str, np.ndarray]]:
    """For each test image of ``indices``: ``input`` and the size of the predicted shape offsets
    (``shape``, mm), reflectance offsets (``reflectance``, RGB) and of the ground truth's out-of-span
    shape detail (``true_shape``, mm: ground truth minus its base-span projection) as ``(H, W)``
    maps on the mean shape, canonical frontal view (NaN off the face)."""
    from facebench.baselines.tewari2018.evaluations import _render_colors
    from facebench.baselines.tewari2018.model import MultiLevelConfig
    from facebench.benchmark import oracle

    indices = np.asarray(indices, np.int64)
    images, output, (q, t, K, size) = _reconstruct_in_canonical_view(net, dataset, face_model, indices, device)
    config = MultiLevelConfig()
    basis = oracle.span_basis(face_model, min(config.n_identity, face_model.n_identity),
                              min(config.n_expression, face_model.n_expression))
    truth = np.stack([np.asarray(dataset.read("vertices", int(i), int(i) + 1))[0] for i in indices])
    residual = truth - oracle.project_to_span(truth, face_model.mean, basis)
    maps = {"shape": torch.linalg.norm(output.shape_offsets, dim=-1),
            "reflectance": torch.linalg.norm(output.reflectance_offsets, dim=-1),
            "true_shape": torch.as_tensor(np.linalg.norm(residual, axis=-1), dtype=torch.float32)}
    rows = []
    for b in range(len(indices)):
        row = {"input": images[b].permute(1, 2, 0).cpu().numpy()}
        for key, values in maps.items():
            colors = values[b].reshape(1, -1, 1).expand(1, -1, 3).float().cpu()
            image, mask = _render_colors(face_model, colors, q, t, K, size)
            m = image[0, ..., 0].numpy().copy()
            m[~mask[0].numpy()] = np.nan
            row[key] = m
        rows.append(row)
    return rows


def _figures(energy: pd.DataFrame, rows, out: Path, name: str) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {}
    if not energy.empty:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for space in ("shape", "reflectance"):
            part = energy[(energy["space"] == space) & (energy["mode"] >= 0)]
            if not part.empty:
                ax.plot(part["mode"] + 1, np.cumsum(part["fraction"]), label=space)
        ax.set_xscale("log")
        ax.set_xlabel("corrective modes, sorted by energy")
        ax.set_ylabel("cumulative fraction of the offsets' energy")
        ax.set_title(f"Energy per corrective mode, {name} (test images)", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        write_figure(fig, out / "mode_energy.png", dpi=110)
        files["mode_energy_plot"] = out / "mode_energy.png"
    if rows:
        keys = (("input", "input image", None), ("true_shape", "true out-of-span shape |r| (mm)", "viridis"),
                ("shape", "predicted shape offset (mm)", "viridis"), ("reflectance", "reflectance offset (RGB)", "magma"))
        fig, axes = plt.subplots(len(rows), len(keys), figsize=(2.6 * len(keys), 2.5 * len(rows)), squeeze=False)
        for r, row in enumerate(rows):
            for c, (key, title, cmap) in enumerate(keys):
                ax = axes[r, c]
                if cmap is None:
                    ax.imshow(np.clip(row[key], 0, 1))
                else:
                    handle = ax.imshow(row[key], cmap=cmap)
                    fig.colorbar(handle, ax=ax, fraction=0.046)
                ax.set_axis_off()
                if r == 0:
                    ax.set_title(title, fontsize=8)
        fig.suptitle(f"Corrective offsets of {name} on the mean shape, frontal view", fontsize=9)
        fig.tight_layout()
        write_figure(fig, out / "offsets.png", dpi=100)
        files["offsets_plot"] = out / "offsets.png"
    return files


def _reflectance_figure(rows, path: Path, name: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = (("input", "input image"), ("truth", "true reflectance (with detail)"), ("base", "base level"),
            ("final", "final level"))
    fig, axes = plt.subplots(len(rows), len(keys), figsize=(2.4 * len(keys), 2.4 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, (key, title) in enumerate(keys):
            axes[r, c].imshow(np.clip(row[key], 0, 1))
            axes[r, c].set_axis_off()
            if r == 0:
                axes[r, c].set_title(title, fontsize=8)
    fig.suptitle(f"Reflectance, unlit, mean shape, frontal view: {name} (linear RGB shown as is)", fontsize=9)
    fig.tight_layout()
    write_figure(fig, path, dpi=100)
    return path


def write_diagnostics(checkpoint: Path, train_path: Path, test_path: Path, out: Path, *, name: str = "",
                      device="cpu", panels: int = 3, albedo: np.ndarray | None = None) -> dict[str, Path]:
    """:func:`gradient_norms` (training images), :func:`mode_energy` and :func:`offset_renderings`
    (test images) of one run into ``out`` (module docstring)."""
    from facebench.datasets.dataset_file import FaceDataset

    train, test = FaceDataset(train_path), FaceDataset(test_path)
    net, face_model = _load(Path(checkpoint), train, device)
    out = Path(out)
    files = {"gradient_norms": write_csv(gradient_norms(net, train, device=device), out / "gradient_norms.csv")}
    energy = mode_energy(net, test, device=device)
    files["mode_energy"] = write_csv(energy, out / "mode_energy.csv")
    rows = offset_renderings(net, test, face_model, list(range(min(panels, len(test)))), device=device)
    files.update(_figures(energy, rows, out, name))
    if albedo is not None:
        panels_rows = reflectance_panels(net, test, face_model, list(range(min(panels, len(test)))), albedo,
                                         device=device)
        files["reflectance_panels"] = _reflectance_figure(panels_rows, out / "reflectance_panels.png", name)
    return files
