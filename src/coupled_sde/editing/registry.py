"""The method registry: each editing method's settings (name, type, range, default) declared once.

A method is one file: a function with the common signature
``(backbone, x, source, target, *, n_steps, start, grid, noise, mask, progress, **options) -> EditResult``
decorated with :func:`register_method`, which lists its :class:`Setting` s. The CLI's choices, the
image API, dataset runs and :func:`validate_settings` (which checks values *without* a model, so a
bad setting fails before minutes of model loading) all read this table.

Settings vocabulary (settings files, the CLI's ``--name`` options, :func:`~coupled_sde.editing.edit_image`):
``steps`` (the method's ``n_steps``), ``start``, the condition settings ``guidance``,
``source_guidance``, ``negative_prompt``, ``true_cfg`` (they build the source and target
:class:`~coupled_sde.backends.base.Condition`: guidance is carried by the conditions), and each
method's own (``integrator``, ``eta``, ``coupling``, ``forward_rule``, ``n_max``, ...).

Defaults: the method's, then the backbone class's ``defaults[method]`` (see
:mod:`coupled_sde.backends.registry`), then the user's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..backends.base import Condition

__all__ = [
    "CONDITION_SETTINGS",
    "Method",
    "Setting",
    "get_method",
    "method_names",
    "methods",
    "register_method",
    "resolve_settings",
    "split_settings",
    "validate_settings",
]


@dataclass(frozen=True)
class Setting:
    """One setting of a method.

    ``type`` is ``int``, ``float`` or ``str`` (``float`` accepts ints; ``coupling`` is ``str | float``,
    see ``types``); ``low``/``high`` bound numbers (inclusive); ``choices`` lists allowed strings;
    ``arg`` is the method's keyword when it differs from ``name``.
    """

    name: str
    type: type
    default: Any = None
    help: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    arg: str | None = None
    also: tuple[type, ...] = ()  # further accepted types (a coupling may be a correlation rho)

    @property
    def keyword(self) -> str:
        return self.arg or self.name

    def check(self, method: str, value: Any) -> Any:
        """The value, converted (``int`` -> ``float``), or a ``ValueError`` saying what is allowed."""
        if value is None:
            return None
        ok = (self.type, *self.also)
        if isinstance(value, bool) or not isinstance(value, ok):
            if float in ok and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            else:
                raise ValueError(f"{method}: {self.name} must be {self._describe()}, got {value!r}")
        if isinstance(value, str) and self.choices is not None and value.lower() not in self.choices:
            if not (float in self.also and _is_number(value)):
                raise ValueError(f"{method}: {self.name} must be one of {', '.join(self.choices)}, got {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                raise ValueError(f"{method}: {self.name}={value!r} is outside [{_fmt(self.low, '-inf')}, {_fmt(self.high, 'inf')}]")
        return value

    def _describe(self) -> str:
        names = {int: "an integer", float: "a number", str: "a string"}
        text = " or ".join(names.get(t, t.__name__) for t in (self.type, *self.also))
        if self.choices:
            text += f" ({', '.join(self.choices)})"
        return text


def _fmt(v: float | None, unbounded: str) -> str:
    return unbounded if v is None else f"{v:g}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


#: The settings that build the conditions (guidance travels with the conditions, not the method).
CONDITION_SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("guidance", float, help="target guidance (FLUX: guidance embedding; SD and class models: CFG scale)"),
        Setting("source_guidance", float, help="source guidance (default: guidance)"),
        Setting("negative_prompt", str, help="the target's negative prompt (true CFG on FLUX, CFG on SD)"),
        Setting("true_cfg", float, low=1.0, help="true classifier-free guidance scale on the target (FLUX)"),
    )
}
STEPS = Setting("steps", int, 28, "grid steps N of the model's sampling schedule", low=1, arg="n_steps")
START = Setting("start", int, 4, "first grid index i0: the edit starts at t_{i0} (smaller = more noise)", low=0)
INTEGRATOR = Setting(
    "integrator", str, None, "euler, heun, ddim (the exact DDIM/DDPM step; default for discrete schedules), or for ODEs rf-solver, fireflow",
    choices=("euler", "euler_maruyama", "em", "heun", "milstein", "ddim", "ddpm", "ancestral", "rf-solver", "rf_solver", "fireflow"),
)  # fmt: skip
ETA = Setting("eta", float, 1.0, "noise scale of the reverse SDE: 0 probability-flow ODE, 1 the reverse SDE", low=0.0)


@dataclass(frozen=True)
class Method:
    """A registered editing method."""

    name: str
    function: Callable[..., Any]
    settings: dict[str, Setting]
    conditions: tuple[str, ...]
    masks: bool
    stochastic: bool
    summary: str
    #: Whether it may begin at the pure-noise end of a rectified-flow schedule (sigma = 1, start 0):
    #: controlled ODEs can (RF-Inversion); the reverse SDE divides by 1 - sigma there.
    starts_at_noise: bool = False

    @property
    def accepts(self) -> frozenset[str]:
        """Every setting name it takes (its own and the condition settings it uses)."""
        return frozenset(self.settings) | frozenset(self.conditions)

    def defaults(self) -> dict[str, Any]:
        return {k: s.default for k, s in self.settings.items() if s.default is not None}


_METHODS: dict[str, Method] = {}
_BUILTIN = ("sync_sde", "sdedit", "ode_inversion", "flowedit")


def register_method(
    name: str,
    *settings: Setting,
    conditions: tuple[str, ...] = tuple(CONDITION_SETTINGS),
    masks: bool = True,
    stochastic: bool = True,
    starts_at_noise: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register an editing function under ``name`` with its settings.

    ``conditions`` are the condition settings it uses (SDEdit has no source member: no
    ``source_guidance``); ``masks`` whether it takes ``mask=``; ``stochastic`` whether ``noise=`` matters; ``starts_at_noise``
    whether ``start = 0`` (sigma = 1 on a rectified-flow schedule) is valid for it.
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _METHODS and _METHODS[name].function.__qualname__ != fn.__qualname__:
            raise ValueError(f"method {name!r} is already registered")

        @functools.wraps(fn)
        def method(*args: Any, seed: Any = None, **kwargs: Any) -> Any:
            if seed is not None:  # the earlier name of noise=
                kwargs.setdefault("noise", seed)
            return fn(*args, **kwargs)

        summary = (fn.__doc__ or "").strip().split("\n")[0]
        _METHODS[name] = Method(
            name, method, {s.name: s for s in settings}, tuple(conditions), masks, stochastic, summary, starts_at_noise
        )
        method.method = fn.method = name  # type: ignore[attr-defined]
        return method

    return wrap


_SCANNED = False


def _load() -> None:
    # scan once, whatever is registered already: a method module nobody imports still joins
    global _SCANNED
    if not _SCANNED:
        _SCANNED = True
        import importlib
        import pkgutil

        from .. import editing

        for info in pkgutil.iter_modules(editing.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"coupled_sde.editing.{info.name}")


_ORDER = ("sync-sde", "flowedit", "sdedit", "ode-inversion")


def methods() -> dict[str, Method]:
    """Every registered method by name (the built-in ones first, then any module of
    :mod:`coupled_sde.editing` that registers one)."""
    _load()
    names = [n for n in _ORDER if n in _METHODS] + sorted(n for n in _METHODS if n not in _ORDER)
    return {n: _METHODS[n] for n in names}


def method_names() -> tuple[str, ...]:
    return tuple(methods())


def get_method(name: str) -> Method:
    known = methods()
    if name not in known:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(known)}")
    return known[name]


def validate_settings(method: str, settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check a method's settings without a model: names, types and ranges. Returns them converted
    (``None`` values dropped); raises a one-line ``ValueError`` naming the bad setting."""
    m = get_method(method)
    given = {k: v for k, v in (settings or {}).items() if v is not None}
    unknown = sorted(set(given) - m.accepts)
    if unknown:
        raise ValueError(f"{method} does not take the setting(s) {unknown}; it takes {sorted(m.accepts)}")
    out = {}
    for key, value in given.items():
        spec = m.settings.get(key) or CONDITION_SETTINGS[key]
        out[key] = spec.check(method, value)
    _cross_check(method, out)
    return out


def _cross_check(method: str, s: Mapping[str, Any]) -> None:
    if "steps" in s and "start" in s and s["start"] >= s["steps"]:
        raise ValueError(f"{method}: start={s['start']} is outside the schedule's steps 0..{s['steps'] - 1}")
    if "n_max" in s and "start" in s:
        raise ValueError(f"{method}: give start or n_max (start = steps - n_max), not both")
    if "steps" in s and s.get("n_max") is not None and s["n_max"] > s["steps"]:
        raise ValueError(f"{method}: n_max={s['n_max']} exceeds steps={s['steps']}")


def resolve_settings(backbone: Any, method: str, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The method's defaults, the backbone's ``defaults[method]`` over them, the user's ``settings`` on top.

    ``source_guidance`` defaults to ``guidance`` (identical prompts then reproduce the source);
    backbones without a guidance embedding (``has_guidance_embedding = False``, FLUX.1-schnell) get
    no guidance unless the user sets it.
    """
    m = get_method(method)
    given = validate_settings(method, settings)
    declared = validate_settings(method, dict(getattr(backbone, "defaults", {}).get(method, {})))
    if getattr(backbone, "has_guidance_embedding", True) is False:
        declared.pop("guidance", None)
        declared.pop("source_guidance", None)
    merged = m.defaults()
    for layer in (declared, given):  # start and n_max are two spellings of one setting: a layer's choice wins
        if "n_max" in layer:
            merged.pop("start", None)
        if "start" in layer:
            merged.pop("n_max", None)
        merged.update(layer)
    if "source_guidance" in m.accepts and "guidance" in merged and "source_guidance" not in merged:
        merged["source_guidance"] = merged["guidance"]
    _cross_check(method, merged)
    return merged


def split_settings(
    method: str, settings: Mapping[str, Any], source: Condition | str | int | None, target: Condition | str | int | None
) -> tuple[Condition, Condition, dict[str, Any]]:
    """Resolved settings to ``(source, target, keyword arguments)`` of the method's function.

    Condition settings fill what the given conditions leave open (a :class:`Condition` with its own
    ``guidance`` keeps it).
    """
    m = get_method(method)
    s = dict(settings)
    guidance, source_guidance = s.pop("guidance", None), s.pop("source_guidance", None)
    negative, true_cfg = s.pop("negative_prompt", None), s.pop("true_cfg", None)
    src = _fill(source, source_guidance, None, None)
    tgt = _fill(target, guidance, negative, true_cfg)
    kwargs = {m.settings[k].keyword: v for k, v in s.items()}
    return src, tgt, kwargs


def _fill(c: Condition | str | int | None, guidance: Any, negative: Any, true_cfg: Any) -> Condition:
    cond = c if isinstance(c, Condition) else Condition(prompt=c)
    return Condition(
        cond.prompt,
        cond.guidance if cond.guidance is not None else (None if guidance is None else float(guidance)),
        cond.negative_prompt if cond.negative_prompt is not None else negative,
        cond.true_cfg if cond.true_cfg != 1.0 or true_cfg is None else float(true_cfg),
    )
