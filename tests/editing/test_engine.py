"""The editing engine: every method on a flow and a VP backbone, noise forms, eta, the registries."""

import subprocess
import sys

import pytest
import torch

from coupled_sde import GridBrownian, RecordedBrownian
from coupled_sde.backends.analytic import GaussianMixtureBackbone
from coupled_sde.backends.base import Condition
from coupled_sde.backends.registry import backbones
from coupled_sde.editing import (
    Setting,
    edit_latents,
    flowedit,
    forward_path,
    methods,
    register_method,
    resolve_settings,
    sdedit,
    sync_sde,
    validate_settings,
)
from coupled_sde.editing.common import normals
from coupled_sde.problems import GaussianMixture

GM = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]), torch.tensor([0.5, 0.8]))
FLOW, VP = GaussianMixtureBackbone(GM), GaussianMixtureBackbone(GM, schedule="vp")
X, _ = GM.sample(400, torch.Generator().manual_seed(0), component=0)
BUILTIN = ("sync-sde", "flowedit", "sdedit", "ode-inversion")


@pytest.mark.parametrize("backbone", [FLOW, VP], ids=["flow", "vp"])
@pytest.mark.parametrize("method", BUILTIN)
def test_every_method_runs_on_both_families_and_moves_towards_the_target(backbone, method):
    out = edit_latents(backbone, X, method, 0, 1, n_steps=20, start=2, noise=1)
    assert out.latents.shape == X.shape and torch.isfinite(out.latents).all()
    before, after = (X.mean(0) - GM.means[1]).norm(), (out.latents.mean(0) - GM.means[1]).norm()
    assert after < before / 2, (method, float(after), float(before))
    assert out.settings["steps"] == 20 and out.model_calls > 0


def test_recorded_normals_reproduce_a_seeded_edit_bit_for_bit():
    seeded = sync_sde(FLOW, X[:50], 0, 1, n_steps=12, start=2, noise=[5 + b for b in range(50)])
    grid = FLOW.schedule.grid(12).sub(2)
    recorded = GridBrownian(grid, 50, (2,), seed=[5 + b for b in range(50)]).normals(0, grid.n_steps)[0]
    replay = sync_sde(FLOW, X[:50], 0, 1, n_steps=12, start=2, noise=recorded)
    assert torch.equal(replay.latents, seeded.latents)
    source = GridBrownian(grid, 50, (2,), seed=[5 + b for b in range(50)])  # a Brownian source on the same grid
    assert torch.equal(sync_sde(FLOW, X[:50], 0, 1, n_steps=12, start=2, noise=source).latents, seeded.latents)
    path = forward_path(X[:50], grid, recorded)
    assert torch.equal(sync_sde(FLOW, X[:50], 0, 1, n_steps=12, start=2, path=path).latents, seeded.latents)
    # a recorded Brownian path (increments) replays up to the rounding of sqrt|dt|
    inc = RecordedBrownian(grid, source.on_grid(grid))
    torch.testing.assert_close(sync_sde(FLOW, X[:50], 0, 1, n_steps=12, start=2, noise=inc).latents, seeded.latents)


def test_noise_is_checked():
    grid = FLOW.schedule.grid(6)
    with pytest.raises(ValueError, match="streams, batch, steps"):
        normals(torch.zeros(3, 6, 2), grid, X[:4])
    with pytest.raises(TypeError, match="noise must be"):
        normals("seven", grid, X[:4])
    with pytest.raises(ValueError, match="end at the source"):
        sync_sde(FLOW, X[:4], 0, 1, n_steps=6, start=1, path=torch.zeros(6, 4, 2))


@pytest.mark.parametrize("backbone", [FLOW, VP], ids=["flow", "vp"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_same_prompt_is_the_source_for_every_eta_and_integrator(backbone, eta):
    for integrator in ("ddim",) if backbone is VP else ("euler", "heun", "ddim"):
        out = sync_sde(backbone, X[:64], 0, 0, n_steps=10, start=2, eta=eta, integrator=integrator, noise=3)
        assert torch.equal(out.latents, X[:64]), (integrator, eta)


def test_eta_zero_ddim_on_rectified_flow_is_euler():
    a = sdedit(FLOW, X[:64], 0, 1, n_steps=10, start=2, eta=0.0, integrator="ddim", noise=4).latents
    b = sdedit(FLOW, X[:64], 0, 1, n_steps=10, start=2, eta=0.0, integrator="euler", noise=4).latents
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_eta_scales_sdedits_diversity():
    """Same start, different noise per sample: eta = 0 (ODE) gives one answer per start, eta = 1 spreads."""
    x = X[:1].expand(200, 2)
    ode = sdedit(FLOW, x, 0, 1, n_steps=20, start=2, eta=0.0, noise=list(range(200))).latents
    sde = sdedit(FLOW, x, 0, 1, n_steps=20, start=2, eta=1.0, noise=list(range(200))).latents
    assert sde.std(0).mean() > ode.std(0).mean()


def test_validate_settings_without_a_model():
    assert validate_settings("sync-sde", {"steps": 10, "start": 2, "eta": 0}) == {"steps": 10, "start": 2, "eta": 0.0}
    for bad, match in [({"steps": 0}, r"steps=0 is outside \[1, inf\]"), ({"start": 2.5}, "start must be an integer"),
                       ({"integrator": "rk4"}, "integrator must be one of"), ({"eta": -1}, "eta=-1"),
                       ({"start": 5, "steps": 5}, "outside the schedule's steps"), ({"colour": 1}, "does not take")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            validate_settings("sync-sde", bad)
    with pytest.raises(ValueError, match="does not take"):
        validate_settings("sdedit", {"source_guidance": 2.0})
    with pytest.raises(ValueError, match="unknown method"):
        validate_settings("magic", {})
    assert validate_settings("sync-sde", {"coupling": 0.5})["coupling"] == 0.5


def test_registered_backbones_declare_valid_defaults_and_nothing_leaks():
    found = backbones()
    assert {"digits", "flux", "stable-diffusion"} <= set(found)
    for cls in found.values():
        for method, settings in cls.defaults.items():
            validate_settings(method, settings)  # every declared default is a valid setting
    flux, digits = found["flux"], found["digits"]
    assert flux.patch_size == 2 and flux.dtype == torch.bfloat16 and "FluxPipeline" in flux.pipelines
    assert digits.patch_size == 1 and digits.dtype == torch.float32
    assert resolve_settings(FLOW, "flowedit") == {"steps": 28, "start": 4, "n_min": 0, "n_avg": 1}  # no FLUX guidance
    assert resolve_settings(VP, "sync-sde")["steps"] == 50


def test_start_and_n_max_are_one_setting_across_layers():
    """A backbone may declare FlowEdit's default as n_max (SD3: 50 steps, n_max 33); the method's
    default start then gives way, and a user's start or n_max overrides either."""

    class Declared(GaussianMixtureBackbone):
        defaults = {"flowedit": {"steps": 50, "n_max": 33}}

    b = Declared(GM)
    assert resolve_settings(b, "flowedit")["n_max"] == 33 and "start" not in resolve_settings(b, "flowedit")
    assert resolve_settings(b, "flowedit", {"start": 10}) == {"steps": 50, "start": 10, "n_min": 0, "n_avg": 1}
    assert resolve_settings(b, "flowedit", {"n_max": 20})["n_max"] == 20
    out = edit_latents(b, X[:8], "flowedit", 0, 1, noise=0)
    assert out.settings["n_max"] == 33


def test_a_new_method_is_one_registration():
    @register_method("test-identity", Setting("scale", float, 1.0, low=0.0))
    def identity(backbone, x, source, target, *, scale=None, noise=None, mask=None, **_):
        """Returns the source (a test method)."""
        from coupled_sde.editing.common import begin

        e = begin(identity, backbone, x, source, target, mask=mask, scale=scale)
        return e.result(e.x * e.options["scale"], 0, 0, 0.0)

    try:
        assert "test-identity" in methods()
        out = edit_latents(FLOW, X[:3], "test-identity", 0, 1, scale=2.0)
        assert torch.equal(out.latents, 2 * X[:3]) and out.settings["scale"] == 2.0
        with pytest.raises(ValueError, match="scale=-1.0 is outside"):
            validate_settings("test-identity", {"scale": -1.0})
    finally:
        from coupled_sde.editing import registry

        registry._METHODS.pop("test-identity")


def test_flowedit_guidance_comes_from_the_conditions():
    a = flowedit(FLOW, X[:20], Condition(0, 1.5), Condition(1, 3.0), n_steps=10, start=2).latents
    b = flowedit(FLOW, X[:20], Condition(0, 1.5), Condition(1, 1.0), n_steps=10, start=2).latents
    assert not torch.allclose(a, b)


def test_importing_the_package_loads_neither_editing_nor_pil():
    code = "import sys, coupled_sde; print('coupled_sde.editing' in sys.modules, 'PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
    code = "import coupled_sde, sys; coupled_sde.edit_image; print('coupled_sde.editing' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "True"
