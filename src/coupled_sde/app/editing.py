"""What the app computes, without any user interface: one edit, every method side by side, difference maps.

:func:`run_edit` is the Python API the app calls for each request (the browser test checks that the
app's output equals it, and :func:`coupled_sde.editing.edit_image`, for the same seed);
:func:`compare_methods` runs every method that applies to the model at its per-model defaults on
the same seed; :func:`method_settings` lists each method's settings with the model's defaults (what
the app's settings panel shows); :func:`mask_from_editor` turns the brush strokes into a mask.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from .models import AppModel

__all__ = [
    "AppEdit",
    "SettingField",
    "compare_methods",
    "difference_map",
    "mask_from_editor",
    "method_settings",
    "methods_for",
    "run_edit",
]


@dataclass
class AppEdit:
    """One edit as the app shows it."""

    method: str
    picture: Image.Image
    difference: Image.Image
    max_difference: int
    model_calls: int
    model_evaluations: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.settings.items() if k not in ("masked",))
        return (
            f"{self.method}: {self.model_calls} model calls ({self.model_evaluations} evaluations), "
            f"{self.seconds:.2f} s; {shown}"
        )


@dataclass(frozen=True)
class SettingField:
    """A setting as a form field: ``kind`` is ``"int"``, ``"float"`` or ``"choice"``."""

    name: str
    kind: str
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""


def _api() -> Any:
    from ..editing import api

    return api


#: Settings of the app's settings panel (the negative prompt has its own box; sync-SDE's ablations stay in the API).
_SHOWN = ("steps", "start", "n_max", "guidance", "source_guidance", "true_cfg", "integrator", "eta", "n_min", "n_avg", "share_values")
#: Values that change nothing, for settings without a default (true CFG off).
_NEUTRAL = {"true_cfg": 1.0}
#: What a choice without a default shows: the method picks (e.g. the exact DDIM step on Stable Diffusion).
DEFAULT_CHOICE = "default"
#: Integrator names shown (the registry also accepts aliases: euler_maruyama, em, ddpm, ancestral).
_INTEGRATORS = ("euler", "heun", "milstein", "ddim")
#: Integrators of the probability-flow ODE only, shown for the deterministic methods (ODE inversion).
_ODE_INTEGRATORS = ("rf-solver", "fireflow")


def methods_for(backbone: Any) -> list[str]:
    """The registered methods whose defaults resolve on this backbone (every built-in one does)."""
    from ..editing.registry import method_names, resolve_settings

    out = []
    for m in method_names():
        try:
            resolve_settings(backbone, m, {})
        except ValueError:
            continue
        out.append(m)
    return out


def method_settings(backbone: Any, method: str) -> list[SettingField]:
    """The method's settings (from the method registry) with this model's defaults (backbone registry)."""
    from ..editing.registry import CONDITION_SETTINGS, get_method, resolve_settings
    from ..editing.value_sharing import can_share_values

    m = get_method(method)
    defaults = resolve_settings(backbone, method, {})
    fields = []
    for name in _SHOWN:
        if name not in m.accepts or (name == "share_values" and not can_share_values(backbone)):
            continue
        spec = m.settings.get(name) or CONDITION_SETTINGS[name]
        default = defaults.get(name, _NEUTRAL.get(name))
        if default is None and name in ("guidance", "source_guidance"):
            default = getattr(backbone, "default_guidance", None)  # what the backbone uses when none is given
        if spec.choices:
            kind = "choice"
            shown = _INTEGRATORS + (() if m.stochastic else _ODE_INTEGRATORS)
            choices = tuple(c for c in shown if c in spec.choices) if name == "integrator" else tuple(spec.choices)
            if default is None:
                default, choices = DEFAULT_CHOICE, (DEFAULT_CHOICE, *choices)
        else:
            kind, choices = ("int" if spec.type is int else "float"), ()
        if default is None:
            continue  # nothing to show (FlowEdit's n_max is given through start = steps - n_max)
        fields.append(SettingField(name, kind, default, spec.low, spec.high, choices, spec.help))
    return fields


def mask_from_editor(value: Mapping[str, Any] | Image.Image | None) -> Image.Image | None:
    """The brush strokes of an image-editor value (``{"background", "layers", "composite"}``) as a mask:
    white where anything was painted (= may change), black elsewhere; ``None`` when nothing was painted."""
    if value is None or isinstance(value, Image.Image):
        return None
    layers = [layer for layer in (value.get("layers") or []) if layer is not None]
    if not layers:
        return None
    painted = None
    for layer in layers:
        alpha = _bytes(layer.convert("RGBA").getchannel("A")) > 0
        painted = alpha if painted is None else painted | alpha
    if painted is None or not bool(painted.any()):
        return None
    return Image.fromarray(painted.to(torch.uint8).mul(255).numpy(), mode="L")


def _bytes(im: Image.Image) -> torch.Tensor:
    return torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(im.height, im.width)


def difference_map(source: Image.Image, edit: Image.Image) -> tuple[Image.Image, int]:
    """``|edit - source|`` (mean over channels, 0..255) in the ``inferno`` colour map scaled to its maximum,
    with a colour bar under it; returns the picture and that maximum (the bar's top)."""
    from matplotlib import colormaps

    a = torch.frombuffer(bytearray(source.convert("RGB").tobytes()), dtype=torch.uint8).view(source.height, source.width, 3)
    b = torch.frombuffer(bytearray(edit.convert("RGB").tobytes()), dtype=torch.uint8).view(edit.height, edit.width, 3)
    d = (a.float() - b.float()).abs().mean(dim=2)
    top = max(int(d.max().round()), 1)
    cmap = colormaps["inferno"]
    rgb = (torch.from_numpy(cmap((d / top).numpy())[..., :3]) * 255).round().to(torch.uint8)
    bar_h = max(6, source.height // 16)
    ramp = torch.linspace(0, 1, source.width).expand(bar_h, source.width)
    bar = (torch.from_numpy(cmap(ramp.numpy())[..., :3]) * 255).round().to(torch.uint8)
    gap = torch.full((2, source.width, 3), 255, dtype=torch.uint8)
    data = torch.cat([rgb, gap, bar]).contiguous()
    return Image.fromarray(data.numpy(), mode="RGB"), top


def run_edit(
    model: AppModel,
    picture: Image.Image,
    source: str,
    target: str,
    method: str = "sync-sde",
    *,
    seed: int = 0,
    mask: Image.Image | None = None,
    negative_prompt: str | None = None,
    progress: bool = False,
    **settings: Any,
) -> AppEdit:
    """Edit ``picture`` from ``source`` to ``target`` with ``method`` and ``settings`` (over the model's defaults)."""
    from ..io import load_mask

    api = _api()
    backbone = model.backbone
    x = model.to_input(picture)
    device = api.execution_device(backbone)
    m = None
    if mask is not None:
        m = load_mask(mask.resize((picture.width, picture.height)), tuple(x.shape[-2:]), threshold=None)
    if negative_prompt:
        settings["negative_prompt"] = model.condition(negative_prompt)
    t0 = time.perf_counter()
    with torch.inference_mode():
        result = api.edit_tensor(
            backbone,
            x.to(device),
            model.condition(source),
            model.condition(target),
            method,
            seed=int(seed),
            mask=m,
            progress=progress,
            **settings,
        )
    seconds = time.perf_counter() - t0
    edited = model.to_picture(result.images)
    shown_source = model.to_picture(x)
    diff, top = difference_map(shown_source, edited)
    return AppEdit(method, edited, diff, top, result.model_calls, result.model_evaluations, seconds, dict(result.settings))


def compare_methods(
    model: AppModel,
    picture: Image.Image,
    source: str,
    target: str,
    *,
    seed: int = 0,
    mask: Image.Image | None = None,
    negative_prompt: str | None = None,
    on_method: Callable[[int, int, str], None] | None = None,
) -> list[AppEdit]:
    """Every method that applies to the model, each at its per-model defaults, on the same seed (and mask)."""
    methods = methods_for(model.backbone)
    edits = []
    for i, method in enumerate(methods):
        if on_method is not None:
            on_method(i, len(methods), method)
        masked = mask if method != "sdedit" else None  # SDEdit takes no mask: it runs on the whole image
        edits.append(run_edit(model, picture, source, target, method, seed=seed, mask=masked, negative_prompt=negative_prompt))
    return edits
