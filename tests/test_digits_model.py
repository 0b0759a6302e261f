"""Tests of the shipped 8x8 digits models (rectified flow + classifier) and their training script.

These load the committed weights and check their *quality*, so they fail if the weights are bad:
guided samples must be recognised as their class, and the classifier must recognise the held-out
digits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
import torch

from coupled_sde.backends.digits import (
    NULL_CLASS,
    DigitsClassifier,
    DigitsFlowNet,
    load_classifier,
    load_flow_network,
    load_heldout,
    pixels_to_model,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "train_digits.py"


@pytest.fixture(autouse=True)
def _few_threads() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(min(2, previous))
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def flow() -> DigitsFlowNet:
    return load_flow_network()


@pytest.fixture(scope="module")
def classifier() -> DigitsClassifier:
    return load_classifier()


def test_shipped_files_are_small() -> None:
    weights = resources.files("coupled_sde.backends.digits").joinpath("weights")
    sizes = {name: len(weights.joinpath(name).read_bytes()) for name in ("flow.pt", "classifier.pt", "heldout.pt")}
    assert sizes["flow.pt"] < 2_000_000
    assert sum(sizes.values()) < 3_000_000
    meta = json.loads(weights.joinpath("training.json").read_text())
    assert meta["quick"] is False
    assert meta["classifier"]["test_accuracy"] >= 0.97
    assert meta["sampling"]["accuracy_at_recommended_guidance"] >= 0.95


def test_flow_network_loads(flow: DigitsFlowNet) -> None:
    assert isinstance(flow, DigitsFlowNet)
    assert not flow.training
    n_params = sum(p.numel() for p in flow.parameters())
    assert 50_000 < n_params < 1_000_000
    assert all(p.dtype == torch.float32 for p in flow.parameters())
    x = torch.randn(5, 1, 8, 8)
    sigma = torch.rand(5)
    label = torch.tensor([0, 3, 9, NULL_CLASS, 5])
    with torch.no_grad():
        u = flow(x, sigma, label)
    assert u.shape == (5, 1, 8, 8)
    assert u.dtype == torch.float32
    assert torch.isfinite(u).all()
    # The class conditioning matters: the same input under two labels gives different velocities.
    with torch.no_grad():
        u_other = flow(x, sigma, torch.full((5,), 1))
    assert not torch.allclose(u, u_other)


def test_classifier_loads(classifier: DigitsClassifier) -> None:
    assert isinstance(classifier, DigitsClassifier)
    assert not classifier.training
    assert all(p.dtype == torch.float32 for p in classifier.parameters())
    with torch.no_grad():
        logits = classifier(torch.zeros(3, 1, 8, 8))
    assert logits.shape == (3, 10)
    assert logits.dtype == torch.float32


def test_heldout_digits() -> None:
    images, labels = load_heldout()
    assert images.dtype == torch.uint8
    assert labels.dtype == torch.long
    assert images.ndim == 3 and images.shape[1:] == (8, 8)
    assert labels.shape == (images.shape[0],)
    assert 300 <= images.shape[0] <= 400  # ~20% of the 1797 sklearn digits
    assert int(images.max()) <= 16
    assert torch.bincount(labels, minlength=10).min() >= 30  # stratified: every class present
    x = pixels_to_model(images)
    assert x.shape == (images.shape[0], 1, 8, 8)
    assert x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0


def test_classifier_recognises_heldout_digits(classifier: DigitsClassifier) -> None:
    images, labels = load_heldout()
    with torch.no_grad():
        pred = classifier(pixels_to_model(images)).argmax(1)
    accuracy = (pred == labels).float().mean().item()
    assert accuracy >= 0.97, accuracy


def test_guided_euler_samples_are_recognised(flow: DigitsFlowNet, classifier: DigitsClassifier) -> None:
    """Plain Euler on dx/dsigma = u_null + w (u_class - u_null) from sigma = 1 (noise) to 0 (data)."""
    per_class, steps, w = 20, 20, 3.0
    gen = torch.Generator().manual_seed(1234)
    labels = torch.arange(10).repeat_interleave(per_class)
    n = labels.shape[0]
    x = torch.randn((n, 1, 8, 8), generator=gen)
    null = torch.full_like(labels, NULL_CLASS)
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    with torch.no_grad():
        for i in range(steps):
            s = sigmas[i].expand(2 * n)
            u_c, u_n = flow(torch.cat([x, x]), s, torch.cat([labels, null])).chunk(2)
            x = x + (sigmas[i + 1] - sigmas[i]) * (u_n + w * (u_c - u_n))
        x = x.clamp(-1.0, 1.0)
        pred = classifier(x).argmax(1)
    accuracy = (pred == labels).float().mean().item()
    assert accuracy >= 0.95, accuracy
    # Samples look like data (mostly background near -1, some ink near +1), not like noise.
    assert float((x < -0.8).float().mean()) > 0.3
    assert float((x > 0.5).float().mean()) > 0.1


def test_training_script_quick(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("flow.pt", "classifier.pt", "heldout.pt", "training.json"):
        assert (tmp_path / name).is_file(), name
    meta = json.loads((tmp_path / "training.json").read_text())
    assert meta["quick"] is True
    assert meta["flow"]["steps"] > 0
    # The written bundles load into the shipped architectures.
    bundle = torch.load(tmp_path / "flow.pt", weights_only=True)
    DigitsFlowNet(**bundle["config"]).load_state_dict(bundle["state_dict"])
    bundle = torch.load(tmp_path / "classifier.pt", weights_only=True)
    DigitsClassifier(**bundle["config"]).load_state_dict(bundle["state_dict"])
    heldout = torch.load(tmp_path / "heldout.pt", weights_only=True)
    shipped_images, shipped_labels = load_heldout()
    # The split is deterministic: the smoke run reproduces the shipped held-out set.
    assert torch.equal(heldout["images"], shipped_images)
    assert torch.equal(heldout["labels"], shipped_labels)
