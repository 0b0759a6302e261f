"""The networks that ship with the package (digits, scenes): read from ``<package>/weights/<name>``.

Each file is a bundle ``{"config": constructor keywords, "state_dict": weights, ...}`` written by
the package's training script and read with ``torch.load(weights_only=True)`` (no pickled code).
"""

from __future__ import annotations

import io
from importlib import resources
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = ["load_bundle", "load_network"]

Net = TypeVar("Net", bound=nn.Module)


def load_bundle(package: str, name: str, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read the bundle ``weights/<name>`` of ``package`` onto ``device``."""
    data = resources.files(package).joinpath("weights", name).read_bytes()
    return torch.load(io.BytesIO(data), map_location=device, weights_only=True)


def load_network(cls: type[Net], package: str, name: str, device: str | torch.device = "cpu") -> Net:
    """The network ``cls(**config)`` with the bundle's weights, float32, in eval mode, on ``device``."""
    bundle = load_bundle(package, name, device)
    net = cls(**bundle["config"])
    net.load_state_dict(bundle["state_dict"])
    return net.to(device=device, dtype=torch.float32).eval()
