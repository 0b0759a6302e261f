"""Missing optional dependencies fail at import with the install command."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest

from coupled_sde._optional import require
from coupled_sde.errors import MissingDependencyError


def test_require_names_the_extra():
    with pytest.raises(ImportError, match=r'pip install "coupled-sde\[diffusers\]"') as info:
        require("surely_not_an_installed_package_xyz", "diffusers")
    assert isinstance(info.value, MissingDependencyError) and info.value.name == "surely_not_an_installed_package_xyz"
    require("torch", "core")  # installed: no error


def test_importing_the_backends_without_diffusers_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "diffusers" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.delitem(sys.modules, "coupled_sde.backends.hf", raising=False)
    with pytest.raises(ImportError, match=r'pip install "coupled-sde\[diffusers\]"'):
        importlib.import_module("coupled_sde.backends.hf")


def test_import_is_lazy():
    """The package exports resolve on first access (diffusers itself is only imported then)."""
    package = importlib.import_module("coupled_sde.backends.hf")
    assert set(package.__all__) <= set(dir(package))
    assert package.FluxBackbone.__name__ == "FluxBackbone"
    with pytest.raises(AttributeError):
        package.NoSuchBackbone  # noqa: B018
