"""sync-SDE, SDEdit and DDIM inversion for VP diffusion backbones (Stable Diffusion 1.x/2.x).

The VP counterparts of :func:`~coupled_sde.editing.sync_sde`, :func:`~coupled_sde.editing.sdedit`
and :func:`~coupled_sde.editing.ode_inversion`, each a configuration of :func:`coupled_sde.solve`
with :class:`~coupled_sde.editing.vp.VPMembers` on the grid ``timesteps(n_steps)[start:] + [-1]``
(:func:`~coupled_sde.editing.vp.vp_grid`):

* :func:`vp_sync_sde` -- ``shared/spec/method.md`` §4 (Zhang & Scott; the discrete analogue on the
  DDPM chain of Ho et al. 2020): the source's forward path is a Markov chain from the source latent
  (:func:`~coupled_sde.editing.vp.vp_forward_path`), the source member is pinned to it by a
  :class:`~coupled_sde.drivers.PathDriver`, and the target member is driven by the increments it
  implies, ``n_t = x^src_{t-1} - mu(x^src_t, c_src)``, ``y_{t-1} = mu(y_t, c_tgt) + n_t``. Identical
  conditions return the source latent exactly.
* :func:`vp_sdedit` -- SDEdit (Meng et al., ICLR 2022): q-sample the source to ``t_start`` with fresh
  noise, then DDPM ancestral sampling under the target with fresh noise.
* :func:`vp_ode_inversion` -- DDIM inversion under the source (Song et al., ICLR 2021; as diffusers'
  ``DDIMInverseScheduler``), then DDIM sampling under the target.

Defaults: 50 steps and ``start = 10`` (the first timestep is 781: diffusers' img2img default
strength 0.8). Conditions with ``guidance=None`` get the backbone's default CFG scale (7.5 for SD).
``integrator`` is accepted for parity with the flow methods' signatures and must be Euler–Maruyama
(the DDPM/DDIM step is that integrator's step of :class:`~coupled_sde.editing.vp.VPMembers`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..backends.base import Condition
from ..brownian import GridBrownian
from ..coupling import Coupling
from ..drivers import PathDriver
from ..grid import TimeGrid
from ..integrators import EulerMaruyama, Integrator, resolve_integrator
from ..solve import solve
from .common import EditResult, Seeds, Timer, as_condition, derive_seeds
from .sync_sde import _as_latents, _mask
from .vp import VPMembers, vp_alpha_bar, vp_forward_path, vp_grid

__all__ = ["vp_sync_sde", "vp_sdedit", "vp_ode_inversion"]


def vp_sync_sde(
    backbone: Any,
    x_src: torch.Tensor,
    source: Condition | str | int | None,
    target: Condition | str | int | None,
    *,
    n_steps: int = 50,
    start: int = 10,
    integrator: Integrator | str = "euler",
    coupling: Coupling | str | float = "synchronous",
    forward_rule: str = "exact",
    mask: torch.Tensor | None = None,
    seed: Seeds = 0,
    progress: bool = False,
) -> EditResult:
    """Edit latents ``x_src`` ``(B, *latent)`` from ``source`` to ``target`` with sync-SDE on a VP backbone.

    ``n_steps - start`` DDPM steps, each one batched model call over the two members [source,
    target]. ``seed`` (one int, or one per sample) draws the forward path; other ``coupling`` s than
    synchronous are ablations (their fresh streams use seeds derived from ``seed``); ``mask`` (1 =
    editable, broadcastable to ``x_src``) keeps the source exactly outside the region.
    ``forward_rule`` is accepted for parity with the flow method: the VP forward path always uses the
    exact transitions (``"exact"``); the flow reference's ``"midpoint"`` rule has no VP counterpart.
    """
    _check_integrator(integrator)
    if forward_rule != "exact":
        raise ValueError(f"the VP forward path uses exact Markov transitions (forward_rule 'exact'), got {forward_rule!r}")
    x_src = _as_latents(x_src)
    src, tgt = as_condition(source), as_condition(target)
    grid = vp_grid(backbone, n_steps, start)
    with Timer() as timer:
        path = vp_forward_path(x_src, grid, [vp_alpha_bar(backbone, t) for t in grid], seed)
        system = VPMembers(backbone, backbone.encode_conditions([src, tgt]), 2, grid, "sde", mask=_mask(mask, x_src))
        driver = PathDriver(path, reference=0, extra_seed=derive_seeds(seed, 1))
        sol = solve(system, torch.stack([path[0], path[0]]), grid, "euler", noise=driver, coupling=coupling, progress=progress)
    settings = dict(n_steps=n_steps, start=start, t0=int(grid[0]), coupling=str(coupling), masked=mask is not None, backbone="vp")
    return EditResult(sol.y[1], "sync-sde", settings, system.model_calls, 2 * system.model_calls, timer.seconds)


def vp_sdedit(
    backbone: Any,
    x_src: torch.Tensor,
    target: Condition | str | int | None,
    *,
    n_steps: int = 50,
    start: int = 10,
    integrator: Integrator | str = "euler",
    seed: Seeds = 0,
    progress: bool = False,
) -> EditResult:
    """Edit ``x_src`` ``(B, *latent)`` towards ``target`` with SDEdit: one member, fresh noise.

    The noisy start is drawn from the forward transition from the data point to ``t_start``,
    ``sqrt(a_0 / a_data) x_src + sqrt(1 - a_0 / a_data) eps`` (the law of the sync-SDE path's start);
    the DDPM chain's noise uses ``seed``, the start's a seed derived from it.
    """
    _check_integrator(integrator)
    x_src = _as_latents(x_src)
    grid = vp_grid(backbone, n_steps, start)
    with Timer() as timer:
        ratio = vp_alpha_bar(backbone, grid[0]) / vp_alpha_bar(backbone, grid[-1])
        eps = GridBrownian(TimeGrid([0.0, 1.0]), x_src.shape[0], tuple(x_src.shape[1:]), seed=derive_seeds(seed, 2))
        x_t = math.sqrt(ratio) * x_src + math.sqrt(1.0 - ratio) * eps.normals(0, 1)[0, :, 0].to(x_src)
        system = VPMembers(backbone, backbone.encode_conditions([as_condition(target)]), 1, grid, "sde")
        sol = solve(system, x_t.unsqueeze(0), grid, "euler", noise=seed, progress=progress)
    settings = dict(n_steps=n_steps, start=start, t0=int(grid[0]), backbone="vp")
    return EditResult(sol.y[0], "sdedit", settings, system.model_calls, system.model_calls, timer.seconds)


def vp_ode_inversion(
    backbone: Any,
    x_src: torch.Tensor,
    source: Condition | str | int | None,
    target: Condition | str | int | None,
    *,
    n_steps: int = 50,
    start: int = 10,
    integrator: Integrator | str = "euler",
    mask: torch.Tensor | None = None,
    progress: bool = False,
) -> EditResult:
    """DDIM-invert ``x_src`` under ``source`` up to ``t_start``, then DDIM-sample under ``target``.

    Deterministic. Reconstruction with identical conditions is exact only in the limit of many steps
    (DDIM inversion evaluates the model at ``(x_{t_i}, t_{i+1})``, as diffusers' ``DDIMInverseScheduler``;
    for v-prediction the noise is recovered with ``alpha_bar(t_{i+1})``, the model's own timestep, where
    diffusers uses ``alpha_bar(t_i)``). With a ``mask`` the sampling
    carries a source member beside the target (one batched call) and blends their drifts, so the
    source's reconstruction is kept outside the mask.
    """
    _check_integrator(integrator)
    x_src = _as_latents(x_src)
    src, tgt = as_condition(source), as_condition(target)
    grid = vp_grid(backbone, n_steps, start)
    up_grid = TimeGrid(grid.times.flip(0))
    with Timer() as timer:
        up = VPMembers(backbone, backbone.encode_conditions([src]), 1, up_grid, "ode")
        z = solve(up, x_src.unsqueeze(0), up_grid, "euler", progress=progress).y
        if mask is None:
            down = VPMembers(backbone, backbone.encode_conditions([tgt]), 1, grid, "ode")
            out = solve(down, z, grid, "euler", progress=progress).y[0]
            evals = up.model_calls + down.model_calls
        else:
            down = VPMembers(backbone, backbone.encode_conditions([src, tgt]), 2, grid, "ode", mask=_mask(mask, x_src))
            out = solve(down, torch.cat([z, z]), grid, "euler", progress=progress).y[1]
            evals = up.model_calls + 2 * down.model_calls
    settings = dict(n_steps=n_steps, start=start, t0=int(grid[0]), masked=mask is not None, backbone="vp")
    return EditResult(out, "ode-inversion", settings, up.model_calls + down.model_calls, evals, timer.seconds)


def _check_integrator(integrator: Integrator | str) -> None:
    """The DDPM/DDIM step *is* an Euler–Maruyama step of :class:`VPMembers`; accept only that, so that a
    setting meant for flow backbones (``"heun"``) fails loudly instead of being ignored."""
    if not isinstance(resolve_integrator(integrator), EulerMaruyama):
        raise ValueError(
            f"VP backbones are stepped by the DDPM/DDIM chain, which is the Euler–Maruyama step of its SDE; "
            f"integrator {integrator!r} is not available for them (use 'euler')"
        )
