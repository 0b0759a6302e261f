"""LPIPS (VGG variant): learned perceptual distance between a source image and its edit.

Zhang, Isola, Efros, Shechtman, Wang 2018, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric" -- the ``lpips`` package, version 0.1, ``net="vgg"``. This is the
structure-preservation axis of the paper's CLIP-vs-LPIPS plots (Zhang & Scott's protocol, docs/guides/dataset-runs.md: VGG, both images
resized to 1024x1024, inputs in ``[-1, 1]``).

For each image: shift/scale the input (``ScalingLayer``), run an ImageNet VGG16 ``features``
trunk and tap it after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3; normalise every feature
vector to unit length over channels; square the difference of the two images' normalised
features; weight the channels with a learned non-negative 1x1 convolution (``lin0..lin4``);
average over space and sum over the five layers.

The VGG16 trunk is written in plain torch (no torchvision) with torchvision's layer indices, so
a torchvision ``vgg16`` state dict loads as is. Real weights, both local files:

* VGG16: torchvision's ``VGG16_Weights.IMAGENET1K_V1`` state dict,
  https://download.pytorch.org/models/vgg16-397923af.pth (keys ``features.0.weight``, ...;
  the ``classifier.*`` keys are ignored).
* Linear heads: ``lpips/weights/v0.1/vgg.pth`` from https://github.com/richzhang/PerceptualSimilarity
  (also shipped inside the ``lpips`` pip package; keys ``lin0.model.1.weight`` .. ``lin4...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from coupled_sde._optional import require
from coupled_sde.metrics._image import check_pair, resize

__all__ = ["LPIPS", "LPIPSNet", "VGG16_CHANNELS", "normalize_channels", "vgg16_features"]

#: torchvision ``vgg16`` configuration "D": conv widths, ``"M"`` = 2x2 max pooling.
_VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
#: Index in ``features`` *after* which each LPIPS tap is taken: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_TAP_AFTER = (3, 8, 15, 22, 29)
#: Channels of the five taps.
VGG16_CHANNELS = (64, 128, 256, 512, 512)
#: lpips' ``ScalingLayer``: ``(x - shift) / scale`` maps [-1, 1] inputs to ImageNet-normalised ones.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
#: Smallest image side: relu5_3 comes after four 2x2 poolings.
_MIN_SIZE = 16
#: lpips' ``normalize_tensor`` epsilon.
_EPS = 1e-10


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` (31 modules, indices 0..30), built without torchvision."""
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16_CONFIG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            channels = int(item)
    return nn.Sequential(*layers)


def normalize_channels(features: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """Unit-normalise each spatial position's feature vector: ``x / (||x||_2 over channels + eps)``."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class _LinearHead(nn.Module):
    """lpips' ``NetLinLayer`` with dropout: ``model = Sequential(Dropout, Conv2d(C, 1, 1, bias=False))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a torch pickle (loaded with ``weights_only=True``)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        require("safetensors", "metrics")
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return dict(state)


class LPIPSNet(nn.Module):
    """What every LPIPS v0.1 variant shares: the input scaling (``ScalingLayer``), a trunk tapped
    after the layers ``tap_after``, one non-negative 1x1 head per tap, and the distance of the
    unit-normalised features. A variant declares ``channels`` (per tap), ``tap_after``, its trunk's
    name and its heads' file name (for the error messages), and builds its trunk."""

    channels: tuple[int, ...] = ()
    tap_after: tuple[int, ...] = ()
    trunk_name = ""
    trunk_hint = ""  # what the trunk-key error adds
    lin_file = ""

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.lins = nn.ModuleList(_LinearHead(c) for c in self.channels)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def _seeded(cls, seed: int, **kwargs: Any) -> Any:
        """Seeded random weights for tests: default-initialised trunk, non-negative heads (as trained ones
        are); the global torch RNG is left untouched."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            metric = cls(**kwargs)
            for head, channels in zip(metric.lins, cls.channels):
                head.model[1].weight.copy_(torch.rand(1, channels, 1, 1) / channels)
        return metric

    def load_trunk_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load the trunk from torchvision-format keys ``features.<i>...`` (others ignored); all are required."""
        trunk = {key[len("features.") :]: value for key, value in state_dict.items() if key.startswith("features.")}
        missing = sorted(set(self.features.state_dict()) - set(trunk))
        if missing:
            raise KeyError(
                f"{self.trunk_name} state dict lacks {len(missing)} trunk tensors, e.g. 'features.{missing[0]}'{self.trunk_hint}"
            )
        self.features.load_state_dict(trunk, strict=True)

    def load_lin_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load the heads from lpips' keys ``lin<N>.model.1.weight`` (or ``lins.<N>.model.1.weight``)."""
        heads = {}
        for n in range(len(self.channels)):
            key = next((k for k in (f"lin{n}.model.1.weight", f"lins.{n}.model.1.weight") if k in state_dict), None)
            if key is None:
                raise KeyError(f"LPIPS head weights lack 'lin{n}.model.1.weight'; expected lpips' weights/v0.1/{self.lin_file}")
            heads[f"{n}.model.1.weight"] = state_dict[key]
        self.lins.load_state_dict(heads, strict=True)

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The trunk's activations after the ``tap_after`` layers, of already-scaled inputs."""
        outputs = []
        for index, layer in enumerate(self.features[: self.tap_after[-1] + 1]):
            x = layer(x)
            if index in self.tap_after:
                outputs.append(x)
        return outputs

    def prepare(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What a variant does to the float32 images before the trunk (nothing here)."""
        return a, b

    def layer_distances(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``(B, taps)``: each tap's spatially averaged, head-weighted squared difference of normalised
        features (preprocessing in float32 on the module's device, the trunk in its own dtype)."""
        check_pair(a, b)
        device = self.shift.device
        a, b = self.prepare(a.to(device=device, dtype=torch.float32), b.to(device=device, dtype=torch.float32))
        dtype = self.features[0].weight.dtype
        shift, scale = self.shift.float(), self.scale.float()
        feats_a = self.taps(((a - shift) / scale).to(dtype))
        feats_b = self.taps(((b - shift) / scale).to(dtype))
        per_layer = []
        for head, fa, fb in zip(self.lins, feats_a, feats_b):
            diff = (normalize_channels(fa.float()) - normalize_channels(fb.float())).pow(2)
            per_layer.append(F.conv2d(diff, head.model[1].weight.float()).mean(dim=(1, 2, 3)))
        return torch.stack(per_layer, dim=1)

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """LPIPS distance per image pair.

        Args:
            a, b: ``(B, 3, H, W)`` float RGB in ``[-1, 1]``, same shape.

        Returns:
            ``(B,)`` float32 on ``a``'s device; 0 for identical images, symmetric.
        """
        return self.layer_distances(a, b).sum(dim=1).to(a.device)


class LPIPS(LPIPSNet):
    """LPIPS v0.1 with a VGG16 trunk; ``lpips(a, b)`` gives the ``(B,)`` distances.

    Args:
        resize: side length both images are resized to (bicubic, anti-aliased) before the network;
            1024 as in the paper's protocol (Zhang & Scott). ``None`` uses the images as they are.

    The module is created with PyTorch's default random initialisation; use
    :meth:`from_pretrained` for the real metric or :meth:`random` for seeded test weights. It is
    put in eval mode (dropout off) and its parameters do not require gradients.
    """

    channels = VGG16_CHANNELS
    tap_after = _TAP_AFTER
    trunk_name, trunk_hint, lin_file = "VGG16", "; expected torchvision's vgg16 keys", "vgg.pth"

    def __init__(self, resize: int | None = 1024) -> None:
        super().__init__(vgg16_features())
        self.resize = resize

    @classmethod
    def from_pretrained(cls, vgg_weights_path: str | Path, lin_weights_path: str | Path, resize: int | None = 1024) -> LPIPS:
        """Load torchvision's VGG16 ImageNet weights and lpips' v0.1 ``vgg.pth`` heads from local files.

        Args:
            vgg_weights_path: a torchvision ``vgg16`` state dict (``vgg16-397923af.pth``) or a
                features-only one, keys ``features.<index>.weight|bias``; ``.pth`` or ``.safetensors``.
            lin_weights_path: lpips' ``weights/v0.1/vgg.pth`` (keys ``lin<N>.model.1.weight``;
                ``lins.<N>.model.1.weight`` is accepted too).
        """
        metric = cls(resize=resize)
        metric.load_vgg_state_dict(_load_state_dict(vgg_weights_path))
        metric.load_lin_state_dict(_load_state_dict(lin_weights_path))
        return metric

    @classmethod
    def random(cls, seed: int = 0, resize: int | None = 1024) -> LPIPS:
        """Seeded random weights for tests: default-initialised VGG16, non-negative heads (as trained ones are).

        The global torch RNG is left untouched.
        """
        return cls._seeded(seed, resize=resize)

    #: torchvision's vgg16 keys ``features.<i>.weight|bias`` (others ignored); all 26 are required.
    load_vgg_state_dict = LPIPSNet.load_trunk_state_dict

    def prepare(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both images resized to ``resize`` (bicubic, anti-aliased, clamped); at least 16 pixels a side."""
        if self.resize is not None:
            size = (self.resize, self.resize)
            a, b = resize(a, size).clamp(-1.0, 1.0), resize(b, size).clamp(-1.0, 1.0)
        if min(a.shape[-2:]) < _MIN_SIZE:
            raise ValueError(
                f"LPIPS-VGG needs images of at least {_MIN_SIZE}x{_MIN_SIZE} (four 2x poolings), got {tuple(a.shape[-2:])}"
            )
        return a, b
