"""Named generator presets for the papers facebench reproduces (``facebench synth generate --preset``).

A preset fills the settings the user left at their default; any other value given explicitly wins.
Cards: ``datasets/synthetic-ramon2019.md`` and ``datasets/synthetic-tewari2018.md``.

- ``ramon2019``: neutral faces (Ramon et al. 2019 train and test on neutral shapes), their angle
  distribution as we read it (``--angles ramon2019``), the out-of-span world and the variable camera.
- ``tewari2018``: expressions (all modes), the default ±60°/±20°/±10° angles, the out-of-span
  world with reflectance detail (freckles, moles, brows, lips, skin tone) and the variable camera.
"""

from __future__ import annotations

import dataclasses

from facebench.errors import FacebenchError

__all__ = ["PRESETS", "apply_preset"]

#: name -> (description, settings it fills)
PRESETS: dict[str, tuple[str, dict]] = {
    "ramon2019": ("neutral, ramon2019 angles, out-of-span world, variable camera",
                  {"angles": "ramon2019", "neutral": True, "world": "out-of-span", "camera": "variable"}),
    "tewari2018": ("expressions, uniform angles, out-of-span world with reflectance detail, variable camera",
                   {"world": "out-of-span", "camera": "variable"}),
}


def apply_preset(settings):
    """``settings`` (a :class:`~facebench.datasets.generator.GeneratorSettings`) with its preset's
    values filled in where the field still has its default; unchanged without a preset."""
    if settings.preset is None:
        return settings
    if settings.preset not in PRESETS:
        raise FacebenchError(f"unknown preset {settings.preset!r}; known: {', '.join(PRESETS)}")
    defaults = {f.name: f.default for f in dataclasses.fields(settings)}
    values = {k: v for k, v in PRESETS[settings.preset][1].items() if getattr(settings, k) == defaults[k]}
    if settings.preset == "ramon2019" and settings.expression_dims not in (None, 0):
        values.pop("neutral", None)  # the user asked for expressions explicitly
    return dataclasses.replace(settings, **values)
