"""The command line's audit (issue 11): bad input fails in one line before the model load; no tracebacks.

Checks that must come before the load make the loader fail if it is called (``no_loading``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from coupled_sde import cli
from coupled_sde.commands import _runtime
from coupled_sde.editing import api as image_api
from coupled_sde.errors import NonFiniteError

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def flux_dir(flux_pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-flux-audit")
    flux_pipe.save_pretrained(folder)
    return folder


@pytest.fixture()
def main(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "edit", ("edit", "edit an image"))
    monkeypatch.setitem(cli.COMMANDS, "run", ("dataset", "dataset runs"))
    return cli.main


@pytest.fixture()
def no_loading(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(image_api, "load_backbone", fail)
    monkeypatch.setattr(image_api, "as_backbone", fail)


def _image(path, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    Image.fromarray(torch.randint(0, 256, (size, size, 3), generator=g, dtype=torch.uint8).numpy()).save(path)
    return path


def _png_header(path, width, height):
    """A PNG declaring width x height pixels (well-formed chunks, valid CRCs) without the memory to make one."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def _edit(model, image, out, *extra):
    return ["edit", "--model", str(model), "--image", str(image), "--source-prompt", "a photo of a cat",
            "--target-prompt", "a photo of a dog", "--steps", "3", "--start", "1", "--out", str(out), "--quiet", *extra]  # fmt: skip


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("coupled-sde ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_version(main, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("coupled-sde 0.")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_guidance_is_refused_before_loading(main, flux_dir, tmp_path, capsys, no_loading, value):
    assert main(_edit(flux_dir, _image(tmp_path / "in.png"), tmp_path / "o.png", f"--guidance={value}")) == 1
    _one_line_error(capsys, "guidance must be a finite number")


@pytest.mark.parametrize("device, needle", [("cuda", "--device cuda"), ("cuda:3", "--device cuda:3"), ("mps", "MPS"), ("gpu", "not a device")])
def test_missing_devices_are_refused_before_loading(main, flux_dir, tmp_path, capsys, no_loading, device, needle):
    if device.startswith("cuda") and torch.cuda.is_available() and device == "cuda":
        pytest.skip("this machine has CUDA")
    if device == "mps" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    assert main(_edit(flux_dir, _image(tmp_path / "in.png"), tmp_path / "o.png", "--device", device)) == 1
    _one_line_error(capsys, needle)


def test_decompression_bomb_is_one_line(main, flux_dir, tmp_path, capsys, no_loading):
    big = _png_header(tmp_path / "big.png", 16384, 16384)  # 268 Mpixels declared (Pillow refuses at open)
    assert main(_edit(flux_dir, big, tmp_path / "o.png")) == 1
    _one_line_error(capsys, "too large to open safely", "268 Mpixels")


def test_errors_during_the_edit_are_one_line(main, flux_dir, tmp_path, capsys, monkeypatch):
    def diverge(*args, **kwargs):
        raise NonFiniteError("drift is NaN at step 2 (t=0.5)\nmembers [1]", 2, 0.5, [1], [0], True)

    monkeypatch.setattr(image_api, "edit_tensor", diverge)
    assert main(_edit(flux_dir, _image(tmp_path / "in.png"), tmp_path / "o.png")) == 1
    _one_line_error(capsys, "NaN or Inf", "step 2", "members [1]")

    def bug(*args, **kwargs):
        raise KeyError("something")

    monkeypatch.setattr(image_api, "edit_tensor", bug)
    assert main(_edit(flux_dir, _image(tmp_path / "in.png"), tmp_path / "o.png")) == 1
    _one_line_error(capsys, "KeyError")


def test_keyboard_interrupt_exits_130(main, flux_dir, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(image_api, "edit_tensor", interrupted)
    assert main(_edit(flux_dir, _image(tmp_path / "in.png"), tmp_path / "o.png")) == 130
    err = capsys.readouterr().err
    assert err.strip() == "coupled-sde edit: interrupted"
    assert not (tmp_path / "o.png").exists()


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_sigint_in_a_real_process_exits_130_in_one_line(flux_dir, tmp_path):
    """A real Ctrl-C (SIGINT) during a long edit: exit code 130, one line about it, no traceback, no output file."""
    import threading

    image = _image(tmp_path / "in.png")
    command = [sys.executable, "-m", "coupled_sde.cli", *_edit(flux_dir, image, tmp_path / "o.png")]
    command[command.index("--steps") + 1] = "400"  # long enough to be interrupted
    command.remove("--quiet")  # "loading ..." on stderr says when the work has started
    p = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        for line in p.stderr:
            lines.append(line)
            if line.startswith("loading "):
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(180), "".join(lines)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=120)
    reader.join(timeout=10)
    err = "".join(lines)
    assert p.returncode == 130, err
    assert "Traceback" not in err and err.rstrip().splitlines()[-1] == "coupled-sde edit: interrupted", err
    assert not (tmp_path / "o.png").exists()


def test_a_quiet_edit_prints_nothing_on_stderr(flux_dir, tmp_path):
    """No transformers 'requires torchvision' notices, no progress bars: only the result line on stdout."""
    image = _image(tmp_path / "in.png")
    command = [sys.executable, "-m", "coupled_sde.cli", *_edit(flux_dir, image, tmp_path / "o.png"), "--threads", "1"]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    assert done.stdout.startswith("saved ") and done.stdout.count("\n") == 1


def test_resize_says_that_the_size_changes(main, flux_dir, tmp_path, capsys):
    image = _image(tmp_path / "in.png", size=40)
    assert main(_edit(flux_dir, image, tmp_path / "o.png", "--resize")) == 0
    assert "resized from 40x40 to 48x48" in capsys.readouterr().out
    assert Image.open(tmp_path / "o.png").size == (48, 48)


def test_threads_option_and_default(main, flux_dir, tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(_edit(flux_dir, _image(tmp_path / "in.png"), tmp_path / "a.png", "--threads", "2")) == 0
        assert torch.get_num_threads() == 2
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert main(_edit(flux_dir, _image(tmp_path / "in.png"), tmp_path / "b.png")) == 0
        assert torch.get_num_threads() == 1  # a tiny model on the CPU: one thread
        assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()  # same bytes whatever the threads
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice is kept
        assert main(_edit(flux_dir, _image(tmp_path / "in.png"), tmp_path / "c.png")) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="--threads must be >= 1"):
        _runtime.configure_threads(0)


def test_offline_hub_id_fails_fast(main, tmp_path, capsys, monkeypatch, no_loading):
    image = _image(tmp_path / "in.png")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    assert main(_edit("black-forest-labs/FLUX.1-dev", image, tmp_path / "o.png")) == 1
    assert time.perf_counter() - t0 < 5
    _one_line_error(capsys, "not in the local Hugging Face cache", "HF_HUB_OFFLINE")

    monkeypatch.delenv("HF_HUB_OFFLINE")

    def unreachable(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr("socket.create_connection", unreachable)
    assert main(_edit("black-forest-labs/FLUX.1-dev", image, tmp_path / "o.png")) == 1
    _one_line_error(capsys, "cannot be reached", "Network is unreachable")


def test_dataset_run_errors_are_one_line(main, flux_dir, tmp_path, capsys):
    _image(tmp_path / "a.png")
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"image": "a.png", "source_prompt": "x", "target_prompt": "y"}]))
    base = ["run", "--model", str(flux_dir), "--dataset", str(data), "--out", str(tmp_path / "run"), "--quiet"]
    assert main([*base, "--device", "cuda:7"]) == 1
    _one_line_error(capsys, "--device cuda:7")


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--steps", "0"], "steps=0 is outside"),
        (["--start", "-1"], "start=-1 is outside"),
        (["--steps", "3", "--start", "3"], "start=3"),
        (["--steps", "3", "--start", "0"], "start=0 begins at sigma=1"),
        (["--method", "sdedit", "--source-guidance", "2"], "does not take"),
        (["--true-cfg", "0.5"], "true_cfg=0.5 is outside"),
        (["--method", "flowedit", "--eta", "0.5"], "flowedit does not take the setting(s) ['eta']"),
        (["--integrator", "rk4"], "integrator must be one of"),
    ],
)
def test_bad_settings_are_refused_before_loading(main, flux_dir, tmp_path, capsys, no_loading, extra, needle):
    args = _edit(flux_dir, _image(tmp_path / "in.png"), tmp_path / "o.png")
    i = args.index("--steps")
    del args[i : i + 4]  # this test's own --steps / --start
    assert main([*args, *extra]) == 1
    _one_line_error(capsys, needle)


def test_steps_below_the_models_default_start_fail_before_loading(main, flux_dir, tmp_path, capsys, no_loading):
    args = _edit(flux_dir, _image(tmp_path / "in.png"), tmp_path / "o.png")
    i = args.index("--start")
    del args[i : i + 2]  # FLUX's default start is 4
    assert main(args) == 1
    _one_line_error(capsys, "start=4")


@pytest.mark.parametrize(
    "settings, needle",
    [({"start": 0}, "start=0 begins at sigma=1"), ({"steps": 0}, "steps=0 is outside"), ({"start": "two"}, "start must be an integer"),
     ({"guidance": float("nan")}, "finite")],
)  # fmt: skip
def test_bad_dataset_settings_fail_before_loading(main, flux_dir, tmp_path, capsys, no_loading, settings, needle):
    _image(tmp_path / "a.png")
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"image": "a.png", "source_prompt": "x", "target_prompt": "y"}]))
    spec = tmp_path / "settings.json"
    spec.write_text(json.dumps([settings]))  # NaN is valid JSON for Python's json module
    command = ["run", "--model", str(flux_dir), "--dataset", str(data), "--out", str(tmp_path / "run"), "--settings", str(spec)]
    assert main([*command, "--quiet"]) == 1
    _one_line_error(capsys, needle)
    assert not (tmp_path / "run" / "results.csv").exists()


def test_edit_image_seeds(flux, tmp_path):
    import numpy as np

    from coupled_sde.editing.api import edit_image

    image = _image(tmp_path / "in.png")
    kw = dict(steps=3, start=1)
    base = edit_image(flux, image, "a cat", "a dog", seed=3, **kw)
    assert edit_image(flux, image, "a cat", "a dog", seed=np.int64(3), **kw).tobytes() == base.tobytes()
    assert edit_image(flux, image, "a cat", "a dog", seed=torch.tensor(3), **kw).tobytes() == base.tobytes()
    assert edit_image(flux, image, "a cat", "a dog", seed=[3], **kw).size == base.size  # one seed per image: works
    with pytest.raises(ValueError, match=r"2 seeds for 1 image\(s\): give one seed per image"):
        edit_image(flux, image, "a cat", "a dog", seed=[1, 2], **kw)
    with pytest.raises(ValueError, match="seed must be an integer"):
        edit_image(flux, image, "a cat", "a dog", seed="one", **kw)


def test_edit_image_honours_the_device_of_a_given_pipeline(tmp_path):
    from coupled_sde.backends.hf import tiny_flux_pipeline
    from coupled_sde.editing.api import edit_image

    pipe = tiny_flux_pipeline(seed=0)  # a fresh one: this test moves it
    image = _image(tmp_path / "in.png")
    on_cpu = edit_image(pipe, image, "a cat", "a dog", steps=3, start=1, seed=1, device="cpu")
    assert pipe.transformer.device.type == "cpu" and on_cpu.size == (32, 32)
    if torch.cuda.is_available():
        on_gpu = edit_image(pipe, image, "a cat", "a dog", steps=3, start=1, seed=1, device="cuda")
        assert pipe.transformer.device.type == "cuda" and on_gpu.size == (32, 32)
    else:  # not silently on the CPU: a clear error
        with pytest.raises(ValueError, match="device=cuda: "):
            edit_image(pipe, image, "a cat", "a dog", steps=3, start=1, seed=1, device="cuda")


def test_start_at_noise_is_the_method_s_call():
    """start = 0 (sigma = 1) is refused before the load for the reverse SDE, not for RF-Inversion's
    controlled ODEs or ODE inversion (RF-Solver, FireFlow), which begin there by design (the method declares it)."""
    from coupled_sde.backends.hf.flux import FluxBackbone
    from coupled_sde.commands._runtime import check_settings_for

    assert check_settings_for(FluxBackbone, "rf-inversion", {"steps": 2})["start"] == 0
    assert check_settings_for(FluxBackbone, "ode-inversion", {"start": 0, "share_values": 3})["start"] == 0  # RF-Solver-Edit
    with pytest.raises(ValueError, match="start=0 begins at sigma=1"):
        check_settings_for(FluxBackbone, "sync-sde", {"steps": 2, "start": 0})
