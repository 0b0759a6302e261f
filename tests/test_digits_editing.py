"""The shipped digits model as an editing backbone, and the demo built on it."""

import argparse

import pytest
import torch

from coupled_sde.backends.base import Condition
from coupled_sde.backends.digits import DigitsBackbone, load_classifier, load_heldout, pixels_to_model
from coupled_sde.editing import edit_latents, sync_sde
from coupled_sde.studies.digits_editing import pick_edits, run_comparison

BB = DigitsBackbone()
IMAGES, LABELS = load_heldout()
X, SRC, TGT = pick_edits(pixels_to_model(IMAGES), LABELS, 20, seed=1)


def test_same_class_returns_the_digit_exactly():
    c = Condition(tuple(SRC.tolist()))
    out = sync_sde(BB, X, c, c, n_steps=12, start=2, integrator="heun", noise=list(range(20)))
    assert torch.equal(out.latents, X)


def test_per_sample_classes_equal_separate_batches():
    batched = BB.predict(
        torch.stack([X[:4], X[:4]]), 0.6, BB.encode_conditions([Condition((1, 2, 3, 4)), Condition((5, 6, 7, 8), guidance=3.0)])
    )
    for b in range(4):
        one = BB.predict(
            torch.stack([X[b : b + 1], X[b : b + 1]]),
            0.6,
            BB.encode_conditions([Condition(1 + b), Condition(5 + b, guidance=3.0)]),
        )
        assert torch.allclose(batched[:, b], one[:, 0], atol=1e-5)


def test_sync_sde_edits_are_recognised_as_the_target_class():
    out = sync_sde(
        BB, X, Condition(tuple(SRC.tolist())), Condition(tuple(TGT.tolist())), n_steps=20, start=5, noise=list(range(20))
    ).latents
    with torch.no_grad():
        pred = load_classifier()(out.clamp(-1, 1)).argmax(-1)
    assert (pred == TGT).float().mean() >= 0.8


def test_comparison_runs_every_method_with_shared_seeds():
    settings = {
        "sync-sde": [dict(start=10)],
        "sdedit": [dict(start=10)],
        "flowedit": [dict(n_max=8)],
        "ode-inversion": [dict(start=10)],
    }
    rows, edits = run_comparison(BB, load_classifier(), X[:6], SRC[:6], TGT[:6], settings, n_steps=16, keep_edits=True)
    assert [r.method for r in rows] == list(settings)
    for r in rows:
        assert 0 <= r.fidelity <= 1 and r.l1 > 0 and r.n_edits == 6
    assert rows[0].model_evaluations / 6 == 2 * (16 - 10)


def test_bad_conditions():
    with pytest.raises(ValueError, match="class 0..9"):
        BB.encode_conditions([Condition(12)])
    with pytest.raises(ValueError, match="class 0..9"):
        BB.encode_conditions([Condition("cat")])
    with pytest.raises(ValueError, match="batch of"):
        edit_latents(BB, X[:3], "sync-sde", Condition((1, 2)), Condition((3, 4)))


def test_demo_writes_its_files_and_refuses_to_overwrite(tmp_path, capsys):
    from coupled_sde.commands import demo

    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    args = p.parse_args(["--model", "digits", "--out", str(tmp_path), "--n-edits", "8", "--steps", "8"])
    assert demo.run(args) == 0
    out = capsys.readouterr().out
    assert "sync-sde" in out and "flowedit" in out and "ode-inversion" in out and "sdedit" in out
    for name in ("edits.png", "frontier.png", "results.csv"):
        assert (tmp_path / name).stat().st_size > 0
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 1 + 12
    with pytest.raises(FileExistsError, match="--force"):
        demo.run(args)


def _demo_args(tmp_path, *extra):
    from coupled_sde.commands import demo

    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    return demo, p.parse_args(["--model", "digits", "--out", str(tmp_path), *extra])


def test_demo_refuses_more_edits_than_held_out_digits_at_once(tmp_path):
    # issue 11: --n-edits 361 used to loop forever in pick_edits
    demo, args = _demo_args(tmp_path, "--n-edits", "361")
    with pytest.raises(ValueError, match="between 1 and 360"):
        demo.run(args)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="between 1 and 20"):
        pick_edits(X, SRC, 21)


def test_demo_with_one_edit_writes_its_picture(tmp_path, capsys):
    # issue 11: --n-edits 1 raised IndexError in the edit grid (a 1-column subplot grid is 1-D)
    demo, args = _demo_args(tmp_path, "--n-edits", "1", "--steps", "6")
    assert demo.run(args) == 0
    assert (tmp_path / "edits.png").stat().st_size > 0


def test_demo_with_three_steps_prints_no_duplicate_rows(tmp_path, capsys):
    # issue 11: --steps 3 rounded every setting to the same start and printed duplicate rows
    demo, args = _demo_args(tmp_path, "--n-edits", "3", "--steps", "3")
    assert demo.run(args) == 0
    lines = (tmp_path / "results.csv").read_text().splitlines()[1:]
    keys = [tuple(line.split(",")[:2]) for line in lines]
    assert len(keys) == len(set(keys)) and len(keys) >= 4


def test_scaled_settings_stay_distinct_and_valid():
    from coupled_sde.studies.digits_editing import DEFAULT_SETTINGS, scaled_settings

    assert scaled_settings(20) == DEFAULT_SETTINGS
    for n in (3, 4, 7, 40):
        for ss in scaled_settings(n).values():
            assert len(ss) == len({tuple(sorted(s.items())) for s in ss})
            for s in ss:
                assert 1 <= s.get("start", 1) <= n - 1 and 1 <= s.get("n_max", 1) <= n - 1


def test_frechet_distance_on_digits_ranks_real_digits_first():
    from coupled_sde.studies.digits_editing import digit_features, reference_digits
    from coupled_sde.studies.scene_metrics import frechet_distance

    clf = load_classifier()
    pixels = pixels_to_model(IMAGES)
    ref = digit_features(clf, reference_digits(pixels, LABELS, TGT, 0))
    real = frechet_distance(digit_features(clf, reference_digits(pixels, LABELS, TGT, 1)), ref)
    noisy = frechet_distance(digit_features(clf, reference_digits(pixels, LABELS, TGT, 1) + 0.6 * torch.randn(20, 1, 8, 8)), ref)
    wrong = frechet_distance(digit_features(clf, X), ref)  # the sources: other classes
    assert real < noisy and real < wrong
