"""Editing methods as configurations of the core: sync-SDE and the baselines on equal terms.

Each method is one module that registers itself (:func:`~coupled_sde.editing.registry.register_method`)
with its settings; all share one signature ``(backbone, x, source, target, *, n_steps, start, grid,
noise, mask, **options)``, one member system (:class:`Members`) for every model family, and run on
:func:`coupled_sde.solve`. :func:`edit_latents`, :func:`edit_images` and :func:`edit_image` call any
of them by name.
"""

from typing import Any

from .ancestral import Ancestral
from .api import edit_image, edit_images, edit_latents, edit_tensor, load_inputs
from .common import EditResult, as_condition
from .flowedit import flowedit
from .members import Members, editing_integrator
from .ode_inversion import ode_inversion
from .registry import Method, Setting, get_method, methods, register_method, resolve_settings, validate_settings
from .sdedit import sdedit
from .sync_sde import forward_path, sync_sde

__all__ = [
    "METHODS",
    "Ancestral",
    "EditResult",
    "Members",
    "Method",
    "Setting",
    "as_condition",
    "edit_image",
    "edit_images",
    "edit_latents",
    "edit_tensor",
    "editing_integrator",
    "flowedit",
    "forward_path",
    "get_method",
    "load_inputs",
    "methods",
    "ode_inversion",
    "register_method",
    "resolve_settings",
    "sdedit",
    "sync_sde",
    "validate_settings",
]


def __getattr__(name: str) -> Any:
    if name == "METHODS":  # every registered method's function by name (read at access: later registrations count)
        return {n: m.function for n, m in methods().items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
