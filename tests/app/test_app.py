"""The app's computation without a browser: models, masks, difference maps, one edit, every method, the command."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from PIL import Image

from coupled_sde import cli
from coupled_sde.app import (
    app_model,
    app_models,
    compare_methods,
    default_model_name,
    difference_map,
    mask_from_editor,
    method_settings,
    methods_for,
    run_edit,
)
from coupled_sde.app.models import digits_to_input, digits_to_picture
from coupled_sde.backends.digits import load_heldout, pixels_to_model


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return app_model("digits")


def test_the_shipped_digits_model_is_the_default_until_a_scene_model_ships():
    assert "digits" in app_models()
    assert default_model_name() == ("scenes" if "scenes" in app_models() else "digits")


def test_digit_pictures_round_trip():
    images, _ = load_heldout()
    x = pixels_to_model(images[:5])
    for i in range(5):
        picture = digits_to_picture(x[i : i + 1])
        assert picture.size == (256, 256) and picture.mode == "RGB"
        back = digits_to_input(picture)
        assert back.shape == (1, 1, 8, 8)
        assert (back - x[i : i + 1]).abs().max() < 1 / 127  # 8-bit grey levels
    # a dark stroke on white is ink; a transparent background counts as white
    drawn = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    drawn.paste((0, 0, 0, 255), (24, 0, 40, 64))
    ink = digits_to_input(drawn)[0, 0]
    assert ink[:, 3:5].min() == 1.0 and ink[:, :3].max() == -1.0


def test_mask_from_the_brush_layers():
    background = Image.new("RGBA", (32, 32), (10, 20, 30, 255))
    layer = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    assert mask_from_editor({"background": background, "layers": [layer], "composite": background}) is None
    layer.paste((255, 0, 0, 255), (0, 0, 16, 32))
    mask = mask_from_editor({"background": background, "layers": [layer], "composite": background})
    assert mask.mode == "L" and mask.size == (32, 32)
    assert mask.getpixel((3, 5)) == 255 and mask.getpixel((20, 5)) == 0
    assert mask_from_editor(background) is None and mask_from_editor(None) is None


def test_difference_map_has_a_scale():
    a = Image.new("RGB", (16, 16), (100, 100, 100))
    b = a.copy()
    b.paste((160, 100, 100), (0, 0, 8, 16))  # mean |d| over channels: 20
    picture, top = difference_map(a, b)
    assert top == 20
    assert picture.height > 16  # the colour bar under the map
    assert picture.getpixel((12, 5)) == picture.getpixel((0, picture.height - 1))  # unchanged = the bar's bottom colour
    assert picture.getpixel((3, 5)) == picture.getpixel((15, picture.height - 1))  # the largest change = its top


def test_digits_edit_is_the_library_edit(digits):
    from coupled_sde.editing.api import edit_tensor

    picture, source, target = digits.examples[0]
    edit = run_edit(digits, picture, source, target, "sync-sde", seed=3, steps=10, start=3)
    direct = edit_tensor(digits.backbone, digits_to_input(picture), int(source), int(target), "sync-sde", seed=3, steps=10, start=3)
    assert edit.picture.tobytes() == digits_to_picture(direct.images).tobytes()
    assert edit.model_calls == direct.model_calls > 0 and edit.seconds > 0
    again = run_edit(digits, picture, source, target, "sync-sde", seed=3, steps=10, start=3)
    assert again.picture.tobytes() == edit.picture.tobytes()


def test_compare_methods_runs_every_method_on_the_same_seed(digits):
    picture, source, target = digits.examples[1]
    edits = compare_methods(digits, picture, source, target, seed=0)
    assert [e.method for e in edits] == methods_for(digits.backbone)
    assert {"sync-sde", "sdedit", "ode-inversion", "flowedit"} <= {e.method for e in edits}
    assert len({e.picture.tobytes() for e in edits}) == len(edits)  # different methods, different edits
    for e in edits:
        assert e.model_calls > 0 and e.difference.size[0] == e.picture.size[0]


def test_settings_panel_shows_the_models_defaults(digits):
    fields = {f.name: f for f in method_settings(digits.backbone, "sync-sde")}
    assert {"steps", "start", "guidance"} <= set(fields)
    assert fields["steps"].kind == "int" and fields["steps"].default >= 1


def test_ode_inversion_offers_the_rf_integrators_and_sharing_where_the_model_has_it(digits, monkeypatch):
    ode = {f.name: f for f in method_settings(digits.backbone, "ode-inversion")}
    assert {"rf-solver", "fireflow"} <= set(ode["integrator"].choices) and "share_values" not in ode
    sde = {f.name: f for f in method_settings(digits.backbone, "sync-sde")}
    assert "rf-solver" not in sde["integrator"].choices  # ODE-only integrators are not offered for the reverse SDE
    monkeypatch.setattr(type(digits.backbone), "share_attention_values", lambda self, shared: None, raising=False)
    shared = {f.name: f for f in method_settings(digits.backbone, "ode-inversion")}["share_values"]
    assert shared.kind == "int" and shared.default == 0


def test_a_mask_keeps_the_unpainted_pixels(digits):
    picture, source, target = digits.examples[0]
    mask = Image.new("L", picture.size, 0)
    mask.paste(255, (0, 0, picture.width // 2, picture.height))  # left half may change
    edit = run_edit(digits, picture, source, target, "sync-sde", seed=1, mask=mask)
    a = digits_to_input(picture)[0, 0]
    b = digits_to_input(edit.picture)[0, 0]
    assert (a[:, 4:] - b[:, 4:]).abs().max() < 0.05 < (a[:, :4] - b[:, :4]).abs().max()


def test_app_command_without_gradio_names_the_extra(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == "gradio" else real(name, *a, **k))
    assert cli.main(["app"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "coupled-sde[app]"' in err


def test_app_command_checks_before_loading(monkeypatch, capsys, tmp_path):
    pytest.importorskip("gradio")
    if not torch.cuda.is_available():
        assert cli.main(["app", "--device", "cuda"]) == 1
        assert "--device cuda" in capsys.readouterr().err
    assert cli.main(["app", "--port", "70000"]) == 1
    assert "--port" in capsys.readouterr().err
    assert cli.main(["app", "--model", str(tmp_path / "missing")]) == 1
    assert "not found" in capsys.readouterr().err


def test_the_scene_model_edits_like_the_library():
    if "scenes" not in app_models():
        pytest.skip("no shipped scene model")
    from coupled_sde.app.models import scenes_to_input, scenes_to_picture
    from coupled_sde.editing.api import edit_tensor

    scenes = app_model("scenes")
    picture, source, target = scenes.examples[0]
    assert source in scenes.conditions and target in scenes.conditions and source != target
    x = scenes_to_input(picture)
    assert x.shape == (1, 3, 32, 32) and scenes_to_picture(x).tobytes() == picture.tobytes()
    edit = run_edit(scenes, picture, source, target, "sync-sde", seed=2)
    direct = edit_tensor(scenes.backbone, x, source, target, "sync-sde", seed=2)
    assert edit.picture.tobytes() == scenes_to_picture(direct.images).tobytes() and edit.model_calls == direct.model_calls
