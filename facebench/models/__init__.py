"""Face models: one :class:`MorphableModel` type, loaders keyed by name behind :func:`load`.

=========  ==================================================  ==============================
name       reads                                               module
=========  ==================================================  ==============================
synthetic  nothing: generated in code (the default)            :mod:`.synthetic`
ict        ICT-FaceKit ``FaceXModel/`` folder (cached .npz)    :mod:`.ict`
bfm2009    ``01_MorphableModel.mat``                           :mod:`.bfm`
bfm2017    statismo HDF5 (``model2017-1_*.h5``)                :mod:`.bfm`
sfm        eos cereal ``sfm_shape_*.bin`` (+ blendshapes)       :mod:`.sfm`
flame      ``generic_model.pkl`` (restricted unpickler)        :mod:`.flame`
npz        a model saved by facebench (``models build``)        :mod:`.morphable_model`
=========  ==================================================  ==============================
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from facebench.errors import FacebenchError
from facebench.models.morphable_model import N_LANDMARKS, MorphableModel

__all__ = ["MorphableModel", "N_LANDMARKS", "load", "MODEL_NAMES", "describe"]

#: name -> (module, loader function, needs a path, one-line description)
_LOADERS: dict[str, tuple[str, str, bool, str]] = {
    "synthetic": ("facebench.models.procedural", "load_synthetic", False,
                  "procedural face model generated in code (default; no files)"),
    "ict": ("facebench.models.ict", "load_ict", False,
            "ICT-FaceKit Light (MIT); 'facebench models fetch ict' or --path FaceXModel/"),
    "bfm2009": ("facebench.models.bfm", "load_bfm2009", True,
                "Basel Face Model 2009, 01_MorphableModel.mat (licence: user-obtained)"),
    "bfm2017": ("facebench.models.bfm", "load_bfm2017", True,
                "Basel Face Model 2017, statismo HDF5 (licence: user-obtained)"),
    "sfm": ("facebench.models.sfm", "load_sfm", True,
            "Surrey Face Model, eos cereal .bin (licence: user-obtained)"),
    "flame": ("facebench.models.flame", "load_flame", True,
              "FLAME generic_model.pkl, read without chumpy (licence: user-obtained)"),
    "npz": ("facebench.models.morphable_model", "MorphableModel.load_npz", True,
            "a model saved by facebench (e.g. 'facebench models build')"),
}

MODEL_NAMES: tuple[str, ...] = tuple(_LOADERS)


def describe() -> list[dict]:
    """One dict per known model name: ``name``, ``needs_path``, ``description``."""
    return [
        {"name": name, "needs_path": needs, "description": text}
        for name, (_, _, needs, text) in _LOADERS.items()
    ]


def load(name: str = "synthetic", path: str | Path | None = None, **options) -> MorphableModel:
    """Load a face model by name.

    Args:
        name: one of :data:`MODEL_NAMES`.
        path: the model file or folder (required for user-obtained models; optional for
            ``ict``, which otherwise uses the cached conversion made by ``models fetch ict``).
        **options: loader options, e.g. ``landmark_mapping=PATH`` (an eos ``ibug_to_*.txt``
            file giving iBUG-68 landmark vertices), ``expression_path=PATH`` (SFM blendshapes).

    Raises:
        FacebenchError: unknown name or missing path; ModelFileError for unreadable files.
    """
    if name not in _LOADERS:
        raise FacebenchError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    module_name, function_name, needs_path, _ = _LOADERS[name]
    if needs_path and path is None:
        raise FacebenchError(f"model {name!r} is read from a file: give its path (--path)")
    target = importlib.import_module(module_name)
    for part in function_name.split("."):
        target = getattr(target, part)
    accepted = inspect.signature(target).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise FacebenchError(f"model {name!r} takes no option {', '.join(unknown)}")
    if name == "npz":
        return target(path)
    return target(path, **options) if path is not None or needs_path else target(**options)
