"""The shipped scene model as an editing backbone: conditions are (shape, colour, texture).

``Condition(prompt=...)`` accepts, per member:

* a string naming the attributes, e.g. ``"red circle on brick"`` (any order; words of
  :data:`~coupled_sde.backends.scenes.data.SHAPES`, ``COLOURS`` and ``TEXTURES``; an attribute left
  out is null, i.e. unconditioned);
* a triple of indices ``(shape, colour, texture)`` (``None`` for a null attribute);
* a sequence of B such strings / triples, one per sample (a batch of edits with different targets
  stays one batch);
* ``None``: the unconditional model.

``guidance`` is the classifier-free scale ``u_null + w (u_cond - u_null)`` (default
:data:`DEFAULT_GUIDANCE`); ``negative_prompt`` replaces the unconditional labels in that formula.
All members and their unconditional rows go through the network in **one** call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ...schedules import RectifiedFlow
from ..base import Condition, guided_predict
from ..registry import BackboneInfo, register_backbone
from .data import COLOURS, SHAPES, SIZE, TEXTURES
from .network import N_VALUES, NULL_LABELS, SceneFlowNet, load_scene_flow

__all__ = ["SceneBackbone", "DEFAULT_GUIDANCE", "parse_scene"]

#: Guidance of the shipped model's recommended sampling (see weights/training.json).
DEFAULT_GUIDANCE = 2.0

_VOCAB = (SHAPES, COLOURS, TEXTURES)
_NAMES = ("shape", "colour", "texture")


def parse_scene(p: object) -> tuple[int, int, int]:
    """One scene description (string, triple or ``None``) -> label triple (null where unspecified)."""
    if p is None:
        return tuple(NULL_LABELS)  # type: ignore[return-value]
    if isinstance(p, str):
        out = list(NULL_LABELS)
        for word in p.lower().replace(",", " ").split():
            if word in ("on", "a", "an", "the", "over", "background"):
                continue
            for k, vocab in enumerate(_VOCAB):
                if word in vocab:
                    if out[k] != NULL_LABELS[k]:
                        raise ValueError(f"{p!r} names two {_NAMES[k]}s")
                    out[k] = vocab.index(word)
                    break
            else:
                raise ValueError(
                    f"unknown word {word!r} in scene {p!r}; shapes {list(SHAPES)}, colours {list(COLOURS)}, textures {list(TEXTURES)}"
                )
        return tuple(out)  # type: ignore[return-value]
    values = list(p.tolist() if isinstance(p, torch.Tensor) else p)  # type: ignore[union-attr]
    if len(values) != 3:
        raise ValueError(f"a scene label is (shape, colour, texture), got {p!r}")
    out = []
    for k, v in enumerate(values):
        if v is None:
            out.append(NULL_LABELS[k])
            continue
        if isinstance(v, bool) or int(v) != v or not 0 <= int(v) < N_VALUES[k]:
            raise ValueError(f"{_NAMES[k]} must be an index 0..{N_VALUES[k] - 1} or None, got {v!r}")
        out.append(int(v))
    return tuple(out)  # type: ignore[return-value]


def _is_single(p: object) -> bool:
    if p is None or isinstance(p, str):
        return True
    if isinstance(p, torch.Tensor):
        return p.dim() == 1
    return isinstance(p, Sequence) and len(p) == 3 and all(v is None or isinstance(v, (int, float)) for v in p)


def _labels(p: object) -> list[tuple[int, int, int]]:
    if _is_single(p):
        return [parse_scene(p)]
    items = list(p)  # type: ignore[call-overload]
    if not items:
        raise ValueError("an empty sequence of scene labels")
    return [parse_scene(q) for q in items]


@dataclass(frozen=True)
class _Encoded:
    labels: torch.Tensor  # (K, 1 or B, 3)
    uncond: torch.Tensor  # (K, 1 or B, 3)
    scales: torch.Tensor  # (K,)
    guided: list[int]


@register_backbone
class SceneBackbone(BackboneInfo):
    """The shipped 32x32 RGB rectified-flow scene model (``prediction = "flow"``); images are latents."""

    name = "scenes"
    prediction = "flow"
    schedule = RectifiedFlow()
    latent_shape = (3, SIZE, SIZE)
    #: The scene benchmark's middle setting (20 steps, sigma_0 = 0.6, see coupled_sde.studies.scene_editing).
    defaults = {
        "sync-sde": {"steps": 20, "start": 8},
        "sdedit": {"steps": 20, "start": 8},
        "ode-inversion": {"steps": 20, "start": 8},
        "flowedit": {"steps": 20, "n_max": 12},
    }

    def __init__(
        self, network: SceneFlowNet | None = None, default_guidance: float = DEFAULT_GUIDANCE, device: str | torch.device = "cpu"
    ) -> None:
        self.network = network if network is not None else load_scene_flow(device)
        self.default_guidance = float(default_guidance)
        self.device = next(self.network.parameters()).device

    def encode_conditions(self, conditions: list[Condition]) -> _Encoded:
        per = [(_labels(c.prompt), _labels(c.negative_prompt)) for c in conditions]
        width = max(max(len(a), len(b)) for a, b in per)
        for a, b in per:
            for lab in (a, b):
                if len(lab) not in (1, width):
                    raise ValueError(f"per-sample scene labels must all have the batch's length {width}, got {len(lab)}")
        labels = torch.tensor([a * (width // len(a)) for a, _ in per], dtype=torch.long)
        uncond = torch.tensor([b * (width // len(b)) for _, b in per], dtype=torch.long)
        scales = [self.default_guidance if c.guidance is None else float(c.guidance) for c in conditions]
        for s in scales:
            if s != s or abs(s) == float("inf"):
                raise ValueError(f"guidance must be a finite number, got {s}")
        return _Encoded(labels, uncond, torch.tensor(scales), [k for k, s in enumerate(scales) if s != 1.0])

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: float, encoded: _Encoded) -> torch.Tensor:
        K, B = x.shape[0], x.shape[1]
        if K != len(encoded.labels):
            raise ValueError(f"state has {K} members but {len(encoded.labels)} conditions were encoded")
        if tuple(x.shape[2:]) != self.latent_shape:
            raise ValueError(f"the scene model takes latents (members, batch, 3, {SIZE}, {SIZE}), got {tuple(x.shape)}")
        if encoded.labels.shape[1] not in (1, B):
            raise ValueError(f"{encoded.labels.shape[1]} per-sample labels were encoded for a batch of {B}")
        labels, uncond = encoded.labels.expand(K, B, 3), encoded.uncond.expand(K, B, 3)
        sample = torch.arange(B).repeat(K + len(encoded.guided))

        def call(rows: torch.Tensor, member: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
            lab = torch.where(negative[:, None], uncond[member, sample], labels[member, sample]).to(self.device)
            sigma = torch.full((rows.shape[0],), float(t), device=self.device)
            return self.network(rows.to(device=self.device, dtype=torch.float32), sigma, lab).to(x.dtype)

        return guided_predict(x, encoded.guided, encoded.scales[encoded.guided], call)

    def encode_images(self, images: torch.Tensor, generator: object = None) -> torch.Tensor:
        """Images are the model's space: ``(B, 3, 32, 32)`` in [-1, 1], unchanged (float32)."""
        if images.dim() != 4 or tuple(images.shape[1:]) != self.latent_shape:
            raise ValueError(f"scene images have shape (B, 3, {SIZE}, {SIZE}), got {tuple(images.shape)}")
        return images.float()

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.clamp(-1.0, 1.0)
