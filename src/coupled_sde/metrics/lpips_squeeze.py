"""LPIPS with the SqueezeNet trunk: the variant PIE-Bench's evaluation script uses.

Zhang et al. 2018 (LPIPS v0.1), ``net="squeeze"``, as torchmetrics'
``LearnedPerceptualImagePatchSimilarity(net_type="squeeze")`` computes it: the input shifted and
scaled (``ScalingLayer``), torchvision's SqueezeNet 1.1 ``features`` tapped at lpips' seven
slices (after ``features[1]``, the first ReLU, and after the Fire modules ``features[4]``, ``[7]``,
``[9]``, ``[10]``, ``[11]``, ``[12]``), each tap unit-normalised over channels, the squared difference
weighted by a learned non-negative 1x1 convolution (``lin0..lin6``), averaged over space and summed.
Unlike the VGG variant (:class:`~coupled_sde.metrics.lpips.LPIPS`) nothing is resized: the script
scores 512 x 512 images as they are.

The trunk is written in plain torch with torchvision's module indices (``features.<i>.squeeze``,
``.expand1x1``, ``.expand3x3``), so torchvision's ``squeezenet1_1`` state dict
(https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth) loads as is; the heads are the
``lpips`` package's ``weights/v0.1/squeeze.pth``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from coupled_sde.metrics.lpips import LPIPSNet, _load_state_dict

__all__ = ["LPIPSSqueeze", "SQUEEZE_CHANNELS", "squeezenet11_features"]

#: Channels of the seven taps.
SQUEEZE_CHANNELS = (64, 128, 256, 384, 384, 512, 512)
#: Index in ``features`` after which each tap is taken (lpips' slices end at 2, 5, 8, 10, 11, 12, 13).
_TAP_AFTER = (1, 4, 7, 9, 10, 11, 12)


class _Fire(nn.Module):
    """torchvision's SqueezeNet ``Fire`` module: squeeze 1x1, then 1x1 and 3x3 expansions concatenated."""

    def __init__(self, inplanes: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze, kernel_size=1)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(x)), F.relu(self.expand3x3(x))], 1)


def squeezenet11_features() -> nn.Sequential:
    """torchvision's ``squeezenet1_1().features`` (13 modules, indices 0..12), built without torchvision."""
    pool = lambda: nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)  # noqa: E731
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=3, stride=2),
        nn.ReLU(),
        pool(),
        _Fire(64, 16, 64, 64),
        _Fire(128, 16, 64, 64),
        pool(),
        _Fire(128, 32, 128, 128),
        _Fire(256, 32, 128, 128),
        pool(),
        _Fire(256, 48, 192, 192),
        _Fire(384, 48, 192, 192),
        _Fire(384, 64, 256, 256),
        _Fire(512, 64, 256, 256),
    )


class LPIPSSqueeze(LPIPSNet):
    """LPIPS v0.1 with a SqueezeNet 1.1 trunk; ``lpips(a, b)`` gives the ``(B,)`` distances of images in ``[-1, 1]``."""

    channels = SQUEEZE_CHANNELS
    tap_after = _TAP_AFTER
    trunk_name, trunk_hint, lin_file = "SqueezeNet", "", "squeeze.pth"

    def __init__(self) -> None:
        super().__init__(squeezenet11_features())

    @classmethod
    def from_pretrained(cls, squeezenet_weights_path: str | Path, lin_weights_path: str | Path) -> LPIPSSqueeze:
        """torchvision's ``squeezenet1_1`` state dict and lpips' v0.1 ``squeeze.pth`` heads, from local files."""
        metric = cls()
        metric.load_trunk_state_dict(_load_state_dict(squeezenet_weights_path))
        metric.load_lin_state_dict(_load_state_dict(lin_weights_path))
        return metric

    @classmethod
    def random(cls, seed: int = 0) -> LPIPSSqueeze:
        """Seeded random weights for tests (non-negative heads, as trained ones are); the global RNG is untouched."""
        return cls._seeded(seed)
