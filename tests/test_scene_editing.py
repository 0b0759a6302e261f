"""Scene edits with ground truth, their measures, and the benchmark loop (coupled_sde.studies.scene_editing)."""

import math

import pytest
import torch

from coupled_sde.backends.scenes import SceneBackbone, load_scene_classifier
from coupled_sde.studies.scene_editing import (
    EDIT_KINDS,
    default_settings,
    make_edits,
    method_names,
    run_scene_benchmark,
    scaled_active_steps,
    summarize_scenes,
)
from coupled_sde.studies.scene_metrics import frechet_distance, masked_feature_distance, masked_psnr, masked_ssim
from coupled_sde.studies.variants import dominance_report, dominates, variant_settings

G = torch.Generator().manual_seed(0)


@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_ground_truth_differs_from_the_source_only_where_the_edit_may_act(kind):
    e = make_edits(kind, 16, seed=2)
    a = EDIT_KINDS.index(kind)
    assert (e.target_labels[:, a] != e.source_labels[:, a]).all()
    others = [k for k in range(3) if k != a]
    assert torch.equal(e.target_labels[:, others], e.source_labels[:, others])
    keep = e.keep.expand_as(e.source)
    assert torch.equal(e.truth[keep], e.source[keep])  # the pixels to keep are exactly the ground truth's
    assert ((e.truth - e.source).abs() > 0.05).any()
    assert 0.05 < e.keep.float().mean() < 0.98
    again = make_edits(kind, 16, seed=2)
    assert torch.equal(again.source, e.source) and torch.equal(again.reference, e.reference)


def test_make_edits_rejects_bad_requests():
    with pytest.raises(ValueError, match="edit kind"):
        make_edits("size", 4)
    with pytest.raises(ValueError, match="at least one"):
        make_edits("shape", 0)


def test_masked_measures_ignore_what_is_not_kept():
    e = make_edits("colour", 8, seed=1)
    changed = torch.where(e.keep, e.source, -e.source)  # everything outside the keep mask flipped
    assert torch.isinf(masked_psnr(e.source, e.source)).all() or (masked_psnr(e.source, e.source) > 90).all()
    assert (masked_psnr(changed, e.source, e.keep) > 90).all()
    assert (masked_psnr(changed, e.source) < 20).all()
    assert torch.allclose(masked_ssim(e.source, e.source), torch.ones(8), atol=1e-5)
    assert (masked_ssim(changed, e.source, e.keep) > masked_ssim(changed, e.source) + 0.1).all()
    clf = load_scene_classifier()
    assert torch.allclose(masked_feature_distance(clf.feature_maps, e.source, e.source, e.keep), torch.zeros(8), atol=1e-6)
    whole = masked_feature_distance(clf.feature_maps, changed, e.source)
    masked = masked_feature_distance(clf.feature_maps, changed, e.source, e.keep)
    assert torch.allclose(masked, torch.zeros(8), atol=1e-6) and (whole > 0.1).all()
    inside = torch.where(e.keep, -e.source, e.source)  # now the kept pixels change
    assert (masked_feature_distance(clf.feature_maps, inside, e.source, e.keep) > 0.01).all()


def test_frechet_distance_matches_the_closed_form_and_scipy():
    from scipy.linalg import sqrtm

    a = torch.randn(400, 5, generator=G, dtype=torch.float64)
    b = (
        torch.randn(300, 5, generator=G, dtype=torch.float64)
        @ torch.diag(torch.tensor([1.0, 2.0, 0.5, 1.0, 1.0], dtype=torch.float64))
        + 0.3
    )
    s1, s2 = torch.cov(a.T).numpy(), torch.cov(b.T).numpy()
    ref = float(((a.mean(0) - b.mean(0)) ** 2).sum()) + float((s1 + s2 - 2 * sqrtm(s1 @ s2).real).trace())
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a, a + 2.0) == pytest.approx(5 * 4.0, rel=1e-9)
    with pytest.raises(ValueError):
        frechet_distance(a, b[:, :3])


def test_settings_cover_every_registered_method_at_matched_calls():
    names = method_names()
    assert {"sync-sde", "flowedit", "sdedit", "ode-inversion"} <= set(names)
    s = {m: default_settings(m) for m in names}
    assert s["sync-sde"] == [dict(start=10), dict(start=8), dict(start=6)]
    assert s["flowedit"] == [dict(n_max=10), dict(n_max=12), dict(n_max=14)]
    assert scaled_active_steps(20) == [10, 12, 14]
    assert scaled_active_steps(3) == [2]  # distinct, inside 1..n-1


def test_benchmark_loop_runs_every_method_with_matched_evaluations():
    edits = [make_edits(k, 3, seed=5) for k in ("shape", "texture")]
    settings = {m: default_settings(m, 8, [4]) for m in method_names()}
    rows, kept = run_scene_benchmark(SceneBackbone(), load_scene_classifier(), edits, settings, n_steps=8, keep_edits=True)
    assert len(rows) == 2 * len(settings)
    by = {(r.kind, r.method): r for r in rows}
    assert by[("shape", "sync-sde")].model_evaluations == by[("shape", "flowedit")].model_evaluations == 2 * 4
    for r in rows:
        assert 0 <= r.fidelity <= 1 and 0 <= r.kept_accuracy <= 1 and math.isfinite(r.frechet) and r.n_edits == 3
        assert r.psnr > 5 and -1 <= r.ssim <= 1 and r.feature_distance >= 0
    text = summarize_scenes(rows, {"shape": 1.0})
    assert "sync-sde" in text and "floor" in text
    assert kept[("shape", "sync-sde", '{"start": 4}')].shape == (3, 3, 32, 32)


def test_sync_sde_variants_and_dominance():
    v = variant_settings({"integrator": 0, "coupling": 0}, 20, [10, 12])
    assert set(v) == {"sync-sde heun", "sync-sde independent", "sync-sde reflection", "sync-sde rho=0.9"}
    assert v["sync-sde heun"] == [
        dict(method="sync-sde", start=10, integrator="heun"),
        dict(method="sync-sde", start=8, integrator="heun"),
    ]

    class R:
        def __init__(self, kind, method, f, d, fd):
            self.kind, self.method, self.fidelity, self.feature_distance, self.frechet = kind, method, f, d, fd

    a, b, c = R("shape", "a", 0.9, 0.1, 1.0), R("shape", "b", 0.8, 0.2, 2.0), R("shape", "c", 0.95, 0.3, 0.5)
    assert dominates(a, b) and not dominates(b, a) and not dominates(a, c) and not dominates(a, a)
    report = dominance_report([a, b, R("shape", "x", 1.0, 0.0, 0.0)], ["a", "b"])
    assert "x" in report and "dominates both" in report
    assert "no candidate" in dominance_report([a, b, c], ["a", "b"])


def test_scene_demo_writes_its_pictures_and_checks_its_arguments_first(tmp_path, capsys):
    import argparse

    from coupled_sde.commands import demo

    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    for bad in ("0", "513"):
        with pytest.raises(ValueError, match="--n-edits must be between 1 and 512"):
            demo.run(p.parse_args(["--out", str(tmp_path / "bad"), "--n-edits", bad]))
    assert not (tmp_path / "bad").exists()
    assert demo.run(p.parse_args(["--out", str(tmp_path), "--n-edits", "1", "--steps", "3"])) == 0
    out = capsys.readouterr().out
    assert all(m in out for m in method_names()) and "Fréchet floor" in out
    names = ["edits_shape.png", "edits_colour.png", "edits_texture.png", "frontier.png", "results.csv"]
    assert all((tmp_path / n).stat().st_size > 0 for n in names)
    rows = (tmp_path / "results.csv").read_text().splitlines()[1:]
    assert len(rows) == len(set(r.split(",")[0] + r.split(",")[1] + r.split(",")[2] for r in rows))  # no duplicates at 3 steps
