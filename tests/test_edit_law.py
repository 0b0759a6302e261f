"""The law of edits on a Gaussian mixture with exact velocities (docs/law-of-edits.md)."""

import argparse
import math

import pytest
import torch

from coupled_sde.studies.edit_law import edit_law, empirical_w2, gaussian_w2, law_mixture


def test_gaussian_w2_matches_closed_forms():
    # 1-D: W2^2 = (m1 - m2)^2 + (s1 - s2)^2
    assert gaussian_w2(torch.tensor([0.0]), torch.tensor([[1.0]]), torch.tensor([1.0]), torch.tensor([[4.0]])) == pytest.approx(
        math.sqrt(2.0)
    )
    # commuting covariances: sum over eigen-directions
    c1, c2 = torch.diag(torch.tensor([1.0, 9.0])), torch.diag(torch.tensor([4.0, 1.0]))
    assert gaussian_w2(torch.zeros(2), c1, torch.zeros(2), c2) == pytest.approx(math.sqrt(1.0 + 4.0))


def test_empirical_w2_of_a_permutation_is_zero_and_of_a_shift_is_its_length():
    a = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert empirical_w2(a, a[torch.randperm(50)]) == pytest.approx(0.0, abs=1e-12)
    assert empirical_w2(a, a + torch.tensor([3.0, 4.0], dtype=torch.float64)) == pytest.approx(5.0, rel=1e-9)


def test_sync_sde_reaches_the_target_law_at_the_transport_bound_and_flowedit_shrinks_it():
    rows, floor = edit_law(methods=["sync-sde", "flowedit"], step_counts=(14,), n=600, seed=3)
    by = {r.method: r for r in rows}
    target_var = float(law_mixture().stds[1, 0] ** 2)
    sync, fe = by["sync-sde"], by["flowedit"]
    assert sync.w2_gaussian < 0.15 and sync.w2_empirical < 1.5 * floor
    assert abs(sync.cov[0][0] - target_var) < 0.2 and abs(sync.cov[1][1] - target_var) < 0.2
    assert 0.97 < sync.rms_over_bound < 1.04
    # FlowEdit's edits have too little spread: closer to the sources than any map with the target law can be
    assert fe.cov[0][0] < 0.85 * target_var and fe.cov[1][1] < 0.85 * target_var
    assert fe.rms_over_bound < 0.98 and fe.w2_gaussian > 2 * sync.w2_gaussian
    assert sync.model_evaluations == fe.model_evaluations


def test_study_law_command(tmp_path, capsys):
    from coupled_sde.commands import study

    p = argparse.ArgumentParser()
    study.add_arguments(p)
    assert study.run(p.parse_args(["law", "--out", str(tmp_path), "--n", "100", "--steps", "7"])) == 0
    out = capsys.readouterr().out
    assert "sync-sde" in out and "flowedit" in out and "OT bound" in out
    assert (tmp_path / "law_of_edits.png").stat().st_size > 0
    assert len((tmp_path / "law_of_edits.csv").read_text().splitlines()) >= 5
    for bad in ("5", "7,x", "0"):
        with pytest.raises(ValueError, match="--steps"):
            study.run(p.parse_args(["law", "--out", str(tmp_path / "b"), "--steps", bad, "--force"]))


def test_eta_reaches_sync_sde():
    """The eta-family variant of the law study: eta is passed through to the reverse SDE (eta = 1 the default)."""
    from coupled_sde.backends.analytic import GaussianMixtureBackbone
    from coupled_sde.backends.base import Condition
    from coupled_sde.editing import edit_latents
    from coupled_sde.studies.edit_law import SHIFT

    gm = law_mixture()
    bb = GaussianMixtureBackbone(gm, shift=SHIFT)
    x, _ = gm.sample(40, torch.Generator().manual_seed(0), component=0)
    runs = {
        eta: edit_latents(bb, x, "sync-sde", Condition(0), Condition(1), n_steps=14, start=2, seed=1, eta=eta)
        for eta in (None, 0.0, 1.0)
    }
    assert runs[0.0].settings["eta"] == 0.0 and runs[1.0].settings["eta"] == 1.0
    assert torch.equal(runs[None].latents, runs[1.0].latents)
    assert (runs[0.0].latents - runs[1.0].latents).abs().max() > 0.1
