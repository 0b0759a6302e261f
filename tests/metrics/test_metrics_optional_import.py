"""Without transformers, the CLIP and DINO metrics say which extra to install; the rest still works."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest
import torch

_MESSAGE = r'pip install "coupled-sde\[metrics\]"'


@pytest.fixture
def no_transformers(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name.split(".")[0] in ("transformers", "safetensors") else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_clip_and_dino_name_the_extra(no_transformers, dino):
    from coupled_sde.metrics import ClipScore, DinoDistance, EditMetrics

    for build in (
        ClipScore.tiny,
        DinoDistance.tiny,
        EditMetrics.tiny,
        lambda: ClipScore.from_pretrained("unused"),
        lambda: DinoDistance(dino.model),
    ):
        with pytest.raises(ImportError, match=_MESSAGE):
            build()


def test_safetensors_files_name_the_extra(no_transformers, tmp_path):
    from coupled_sde.metrics.lpips import _load_state_dict

    with pytest.raises(ImportError, match=_MESSAGE):
        _load_state_dict(tmp_path / "vgg16.safetensors")


def test_package_imports_and_pixel_metrics_work_without_transformers(no_transformers, monkeypatch):
    import coupled_sde

    for name in [m for m in sys.modules if m.startswith("coupled_sde.metrics")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delattr(coupled_sde, "metrics", raising=False)  # restored afterwards, with sys.modules
    package = importlib.import_module("coupled_sde.metrics")
    images = torch.zeros(1, 3, 8, 8)
    assert torch.equal(package.l1_255(images, images), torch.zeros(1))
