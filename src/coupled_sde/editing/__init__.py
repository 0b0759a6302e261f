"""Editing methods as configurations of the core: sync-SDE and the baselines on equal terms.

Every method takes a backbone (:mod:`coupled_sde.backends`), source latents and conditions, runs
on :func:`coupled_sde.solve`, and reports its model calls.
"""

from .api import METHODS, VP_METHODS, edit_images, edit_latents
from .common import EditResult, as_condition
from .flowedit import flowedit
from .members import FlowMembers
from .ode_inversion import ode_inversion
from .sdedit import sdedit
from .sync_sde import forward_path, sync_sde
from .vp import VPMembers
from .vp_methods import vp_ode_inversion, vp_sdedit, vp_sync_sde

__all__ = [
    "METHODS",
    "VP_METHODS",
    "VPMembers",
    "EditResult",
    "FlowMembers",
    "as_condition",
    "edit_images",
    "edit_latents",
    "flowedit",
    "forward_path",
    "ode_inversion",
    "sdedit",
    "sync_sde",
    "vp_ode_inversion",
    "vp_sdedit",
    "vp_sync_sde",
]
