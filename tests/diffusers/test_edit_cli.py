"""``coupled-sde edit`` and ``coupled_sde.edit_image`` end to end on tiny pipelines saved to disk.

The models are loaded for real from ``save_pretrained`` folders (``--model PATH``); the checks that
must happen before loading are verified by making the loader fail if it is called.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from PIL import Image

from coupled_sde import cli
from coupled_sde.editing import api as image_api
from coupled_sde.editing.api import edit_image, model_family, resolve_settings


@pytest.fixture(scope="module")
def flux_dir(flux_pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-flux")
    flux_pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sd_dir(sd_pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sd")
    sd_pipe.save_pretrained(folder)
    return folder


@pytest.fixture()
def main(monkeypatch):
    """``cli.main`` with the ``edit`` command registered (whatever the CLI's registration state)."""
    monkeypatch.setitem(cli.COMMANDS, "edit", ("edit", "edit an image"))
    return cli.main


def _image(path, height=32, width=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8)
    Image.fromarray(data.numpy()).save(path)
    return path


def _args(model, image, out, *extra):
    return [
        "edit",
        "--model",
        str(model),
        "--image",
        str(image),
        "--source-prompt",
        "a photo of a cat",
        "--target-prompt",
        "a photo of a dog",
        "--steps",
        "3",
        "--start",
        "1",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


@pytest.fixture()
def no_loading(monkeypatch):
    """Make loading a model an error: for checks that must come first."""

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(image_api, "load_backbone", fail)


def test_flux_edit_end_to_end_and_same_seed_same_bytes(main, flux_dir, tmp_path, capsys):
    image = _image(tmp_path / "in.png")
    assert main(_args(flux_dir, image, tmp_path / "a.png", "--seed", "5")) == 0
    out = capsys.readouterr().out
    assert "2 model calls (4 evaluations)" in out and " s" in out
    assert Image.open(tmp_path / "a.png").size == (32, 32)
    assert main(_args(flux_dir, image, tmp_path / "b.png", "--seed", "5")) == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert main(_args(flux_dir, image, tmp_path / "c.png", "--seed", "6")) == 0
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "c.png").read_bytes()


@pytest.mark.parametrize("method, calls", [("flowedit", 2), ("sdedit", 2), ("ode-inversion", 4)])
def test_flux_baselines(main, flux_dir, tmp_path, capsys, method, calls):
    image = _image(tmp_path / "in.png")
    assert main(_args(flux_dir, image, tmp_path / "out.png", "--method", method)) == 0
    assert f"{calls} model calls" in capsys.readouterr().out


def test_existing_output_is_refused_before_the_model_is_loaded(main, flux_dir, tmp_path, capsys, no_loading):
    image = _image(tmp_path / "in.png")
    out = tmp_path / "edit.png"
    out.write_bytes(b"an earlier edit")
    assert main(_args(flux_dir, image, out)) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err and err.count("\n") == 1
    assert out.read_bytes() == b"an earlier edit"


def test_force_overwrites(main, flux_dir, tmp_path):
    image = _image(tmp_path / "in.png")
    out = tmp_path / "edit.png"
    out.write_bytes(b"an earlier edit")
    assert main(_args(flux_dir, image, out, "--force")) == 0
    assert Image.open(out).size == (32, 32)


def test_missing_extra_names_the_install_command(main, flux_dir, tmp_path, capsys, monkeypatch, no_loading):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == "diffusers" else real(name, *a, **k))
    assert main(_args(flux_dir, _image(tmp_path / "in.png"), tmp_path / "out.png")) == 1
    assert 'pip install "coupled-sde[diffusers]"' in capsys.readouterr().err


def test_bad_size_names_the_nearest_size_and_resize_fixes_it(main, flux_dir, tmp_path, capsys, monkeypatch):
    image = _image(tmp_path / "in.png", height=40, width=24)
    with monkeypatch.context() as m:
        m.setattr(image_api, "load_backbone", lambda *a, **k: pytest.fail("loaded"))
        assert main(_args(flux_dir, image, tmp_path / "out.png")) == 1
    err = capsys.readouterr().err
    assert "40x24" in err and "48x32" in err and "--resize" in err
    assert main(_args(flux_dir, image, tmp_path / "out.png", "--resize")) == 0
    assert Image.open(tmp_path / "out.png").size == (32, 48)  # PIL: (width, height)


def test_missing_model_and_input_errors(main, flux_dir, tmp_path, capsys, no_loading):
    image = _image(tmp_path / "in.png")
    assert main(_args(tmp_path / "no-such-model", image, tmp_path / "o.png")) == 1
    assert "model folder not found" in capsys.readouterr().err
    assert main(_args(tmp_path, image, tmp_path / "o.png")) == 1
    assert "no model_index.json" in capsys.readouterr().err
    assert main(_args(flux_dir, tmp_path / "missing.png", tmp_path / "o.png")) == 1
    assert "missing.png" in capsys.readouterr().err
    mask = _image(tmp_path / "mask.png", height=16, width=32)
    assert main(_args(flux_dir, image, tmp_path / "o.png", "--mask", str(mask))) == 1
    assert "mask" in capsys.readouterr().err
    assert main(_args(flux_dir, image, tmp_path / "o.png", "--method", "sdedit", "--mask", str(image))) == 1
    assert "sdedit does not support masks" in capsys.readouterr().err


def test_stable_diffusion_edit(main, sd_dir, tmp_path, capsys):
    image = _image(tmp_path / "in.png")  # SD takes multiples of 8
    assert model_family(sd_dir) == "stable-diffusion"
    assert main(_args(sd_dir, image, tmp_path / "sd.png")) == 0
    assert "2 model calls" in capsys.readouterr().out
    assert Image.open(tmp_path / "sd.png").size == (32, 32)


def test_bad_settings_and_methods_are_refused_before_loading(main, sd_dir, tmp_path, capsys, no_loading):
    assert main(_args(sd_dir, _image(tmp_path / "in.png"), tmp_path / "o.png", "--eta", "-1")) == 1
    assert "eta=-1.0 is outside [0, inf]" in capsys.readouterr().err
    assert main(_args(sd_dir, _image(tmp_path / "in.png"), tmp_path / "o.png", "--method", "magic")) == 1
    assert "unknown method 'magic'" in capsys.readouterr().err


def test_edit_image_api(flux_dir, flux_pipe, flux, tmp_path):
    image = Image.open(_image(tmp_path / "in.png"))
    a = edit_image(flux_dir, image, "a cat", "a dog", steps=3, start=1, seed=2, device="cpu")
    b = edit_image(flux_pipe, tmp_path / "in.png", "a cat", "a dog", steps=3, start=1, seed=2)
    assert isinstance(a, Image.Image) and a.size == (32, 32)
    assert a.tobytes() == b.tobytes()  # loaded from disk or a pipeline passed in: the same model, the same seed
    info = a.info["coupled_sde"]
    assert info["model_calls"] == 2 and info["settings"]["steps"] == 3 and info["settings"]["guidance"] == 1.0
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 16:] = 1
    masked = edit_image(flux, image, "a cat", "a dog", method="flowedit", steps=3, start=1, mask=mask)
    assert masked.info["coupled_sde"]["settings"]["masked"] is True
    resized = edit_image(flux, torch.zeros(1, 3, 30, 30), "a cat", "a dog", steps=3, start=1, resize=True)
    assert resized.size == (32, 32)


def test_settings_defaults_and_errors(flux, schnell, sd):
    assert resolve_settings(flux, "sync-sde") == {
        "steps": 28, "start": 4, "guidance": 1.0, "source_guidance": 1.0, "eta": 1.0, "coupling": "synchronous"
    }  # fmt: skip
    assert resolve_settings(flux, "flowedit")["source_guidance"] == 1.5
    flowedit = resolve_settings(flux, "flowedit", {"n_max": 20})
    assert flowedit == {"steps": 28, "n_max": 20, "guidance": 5.5, "source_guidance": 1.5, "n_min": 0, "n_avg": 1}
    assert resolve_settings(flux, "sync-sde", {"guidance": 3.5})["source_guidance"] == 3.5
    assert "guidance" not in resolve_settings(schnell, "sync-sde")  # no guidance embedding: no warning either
    assert resolve_settings(sd, "sync-sde")["steps"] == 50
    with pytest.raises(ValueError, match="does not take"):
        resolve_settings(flux, "sdedit", {"source_guidance": 2.0})
    with pytest.raises(ValueError, match="not both"):
        resolve_settings(flux, "flowedit", {"start": 4, "n_max": 24})
    assert resolve_settings(sd, "flowedit")["steps"] == 50  # FlowEdit in its DDIM form: SD's grid, not FLUX's


def test_any_method_setting_through_set(main, flux_dir, tmp_path, capsys):
    """RF-Solver-Edit from the command line (``--set share_values=1``) is the API's edit, byte for byte."""
    image = _image(tmp_path / "in.png")
    extra = ("--method", "ode-inversion", "--integrator", "rf-solver", "--set", "share_values=1", "--set", "start=0")
    cmd = [a for a in _args(flux_dir, image, tmp_path / "cli.png", *extra) if a not in ("--start", "1")]
    assert main(cmd) == 0
    assert "12 model calls" in capsys.readouterr().out  # 3 steps x 2 stages, inversion and edit
    api = edit_image(flux_dir, Image.open(image), "a photo of a cat", "a photo of a dog", method="ode-inversion",
                     steps=3, start=0, integrator="rf-solver", share_values=1, seed=0, device="cpu")  # fmt: skip
    assert Image.open(tmp_path / "cli.png").tobytes() == api.tobytes()


def test_set_errors_come_before_loading(main, flux_dir, sd_dir, tmp_path, capsys, no_loading):
    image = _image(tmp_path / "in.png")
    cases = [
        (flux_dir, ("--set", "share_values"), "--set takes NAME=VALUE"),
        (flux_dir, ("--set", "start=2"), "--set start=2 contradicts --start 1"),
        (flux_dir, ("--set", "share_values=1"), "sync-sde does not take the setting(s) ['share_values']"),
        (flux_dir, ("--method", "rf-inversion", "--set", "gamma=2"), "gamma=2.0 is outside [0, 1]"),
        (sd_dir, ("--method", "ode-inversion", "--set", "share-values=1"), "share_values needs a backbone that can share attention values"),
    ]
    for model, extra, message in cases:
        assert main(_args(model, image, tmp_path / "o.png", *extra)) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
