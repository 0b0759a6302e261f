"""The models the app can edit with, and how each turns a picture into its input and back.

An :class:`AppModel` names a backbone loader and the model's picture conventions:

* ``to_input(PIL) -> (1, C, H, W)`` in [-1, 1] and ``to_picture(tensor) -> PIL`` (the shipped
  digits model works on 8x8 grey ink maps; a diffusers model on RGB images whose sides are
  multiples of its VAE's factor);
* ``conditions``: the labels of a class-conditional model (the app shows pickers) or ``None``
  (free-text prompts), and ``condition(label)`` what the backbone is conditioned on;
* ``examples``: shipped pictures to start from.

Shipped models are registered by name (:func:`register_app_model`); :func:`default_model_name`
picks the shipped scene model once it is registered, the digits model until then. A path or a hub
id (``--model``) becomes an :class:`AppModel` through :func:`hub_model`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

__all__ = [
    "AppModel",
    "app_model",
    "app_models",
    "default_model_name",
    "hub_model",
    "register_app_model",
]


@dataclass
class AppModel:
    """A model as the app sees it (see the module docstring)."""

    name: str
    title: str
    load: Callable[[], Any]
    to_input: Callable[[Image.Image], torch.Tensor]
    to_picture: Callable[[torch.Tensor], Image.Image]
    conditions: tuple[str, ...] | None = None
    condition: Callable[[str], Any] = str
    examples: list[tuple[Image.Image, str, str]] = field(default_factory=list)
    note: str = ""
    _backbone: Any = None

    @property
    def backbone(self) -> Any:
        """The loaded backbone (loaded on first use, then kept)."""
        if self._backbone is None:
            self._backbone = self.load()
        return self._backbone


_SHIPPED: dict[str, Callable[[], AppModel]] = {}

#: Shipped models in order of preference for the default (the scene model once it ships).
_PREFERENCE = ("scenes", "digits")


def register_app_model(name: str) -> Callable[[Callable[[], AppModel]], Callable[[], AppModel]]:
    """Decorator: register a factory of a shipped :class:`AppModel` under ``name``."""

    def wrap(factory: Callable[[], AppModel]) -> Callable[[], AppModel]:
        _SHIPPED[name] = factory
        return factory

    return wrap


def app_models() -> tuple[str, ...]:
    """Names of the shipped models."""
    return tuple(_SHIPPED)


def default_model_name() -> str:
    """The shipped model the app opens with: the first of :data:`_PREFERENCE` that is registered."""
    for name in _PREFERENCE:
        if name in _SHIPPED:
            return name
    return next(iter(_SHIPPED))


def app_model(model: str | os.PathLike | None = None, *, device: str | None = None, dtype: str | None = None) -> AppModel:
    """A shipped model by name (``None``: :func:`default_model_name`), else a local folder or hub id."""
    name = default_model_name() if model is None else os.fspath(model)
    if name in _SHIPPED:
        return _SHIPPED[name]()
    return hub_model(name, device=device, dtype=dtype)


# -- the shipped digits model ------------------------------------------------------------------

#: Side of the digits pictures shown in the app (8x8 pixels, each a DIGIT_SCALE-pixel square).
DIGIT_SCALE = 32


def digits_to_input(picture: Image.Image) -> torch.Tensor:
    """A picture of a dark digit on a light ground as the model's ``(1, 1, 8, 8)`` ink map in [-1, 1].

    Grey levels, box-averaged down to 8x8 (what the dataset's 32x32 bitmaps were reduced with);
    ink = dark, as printed: 0 (white) .. 16 (black) on the model's scale.
    """
    from ..backends.digits import pixels_to_model

    grey = _flatten(picture).convert("L").resize((8, 8), Image.Resampling.BOX)
    data = torch.frombuffer(bytearray(grey.tobytes()), dtype=torch.uint8).view(1, 8, 8).float()
    return pixels_to_model(16.0 * (1.0 - data / 255.0))


def digits_to_picture(x: torch.Tensor) -> Image.Image:
    """The inverse of :func:`digits_to_input`, each pixel a DIGIT_SCALE-pixel square (dark ink on white)."""
    from ..backends.digits import model_to_pixels

    pixels = model_to_pixels(x.detach().float().cpu().reshape(1, 1, 8, 8))[0, 0]
    grey = (255.0 * (1.0 - pixels / 16.0)).round().clamp(0, 255).to(torch.uint8)
    small = Image.frombytes("L", (8, 8), grey.numpy().tobytes())
    return small.resize((8 * DIGIT_SCALE, 8 * DIGIT_SCALE), Image.Resampling.NEAREST).convert("RGB")


def _flatten(picture: Image.Image) -> Image.Image:
    """Transparent pixels composited on white (a drawn digit with an alpha channel)."""
    if picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info):
        rgba = picture.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return picture


@register_app_model("digits")
def _digits() -> AppModel:
    from ..backends.digits import DigitsBackbone, load_heldout, pixels_to_model

    images, labels = load_heldout()
    examples = []
    for digit, target in ((3, 8), (1, 7), (0, 6), (5, 9)):
        i = int((labels == digit).nonzero()[0])
        examples.append((digits_to_picture(pixels_to_model(images[i : i + 1])), str(digit), str(target)))
    return AppModel(
        name="digits",
        title="the shipped 8x8 digits model (class-conditional rectified flow)",
        load=DigitsBackbone,
        to_input=digits_to_input,
        to_picture=digits_to_picture,
        conditions=tuple(str(c) for c in range(10)),
        condition=int,
        examples=examples,
        note="Prompts are digit classes. Pictures are reduced to 8x8 grey pixels (dark ink on white).",
    )


# -- the shipped scene model -------------------------------------------------------------------

#: Side of the scene pictures shown in the app (32x32 pixels, each a SCENE_SCALE-pixel square).
SCENE_SCALE = 8


def scenes_to_input(picture: Image.Image) -> torch.Tensor:
    """A picture as the scene model's ``(1, 3, 32, 32)`` in [-1, 1] (box-averaged down to 32x32)."""
    from ..backends.scenes import SIZE
    from ..io import load_image

    return load_image(_flatten(picture).convert("RGB").resize((SIZE, SIZE), Image.Resampling.BOX))


def scenes_to_picture(x: torch.Tensor) -> Image.Image:
    """A ``(1, 3, 32, 32)`` scene, each pixel a SCENE_SCALE-pixel square."""
    from ..io import to_pil

    small = to_pil(x.detach().float().cpu())
    return small.resize((small.width * SCENE_SCALE, small.height * SCENE_SCALE), Image.Resampling.NEAREST)


def _register_scenes() -> None:
    import importlib.util

    if importlib.util.find_spec("coupled_sde.backends.scenes") is None:
        return

    @register_app_model("scenes")
    def _scenes() -> AppModel:
        from ..backends.scenes import COLOURS, SHAPES, TEXTURES, SceneBackbone, render, sample_params

        params = sample_params(4, torch.Generator().manual_seed(0), split="heldout")
        images, _ = render(params)
        examples = []
        for i in range(4):
            shape, colour, texture = SHAPES[int(params.shape[i])], COLOURS[int(params.colour[i])], TEXTURES[int(params.texture[i])]
            other = COLOURS[(int(params.colour[i]) + 1) % len(COLOURS)]
            examples.append((scenes_to_picture(images[i : i + 1]), f"{colour} {shape} on {texture}", f"{other} {shape} on {texture}"))
        return AppModel(
            name="scenes",
            title="the shipped 32x32 scene model (a coloured shape over a texture)",
            load=SceneBackbone,
            to_input=scenes_to_input,
            to_picture=scenes_to_picture,
            conditions=tuple(f"{c} {s} on {t}" for s in SHAPES for c in COLOURS for t in TEXTURES),
            condition=str,
            examples=examples,
            note="Prompts name a colour, a shape and a texture. Pictures are reduced to 32x32 pixels.",
        )


_register_scenes()


# -- diffusers models (FLUX.1, Stable Diffusion, ...) -----------------------------------------


def hub_model(model: str, *, device: str | None = None, dtype: str | None = None) -> AppModel:
    """A diffusers checkpoint (local folder or hub id) as an :class:`AppModel` with free-text prompts.

    Pictures are resized to the nearest sides the model takes (the app says so when it does).
    """
    from ..editing import api
    from ..io import load_image, to_pil

    family = api.model_family(model)  # before any weights: a bad path or an unsupported pipeline fails now
    multiple = api.size_multiple(model, family)

    def to_input(picture: Image.Image) -> torch.Tensor:
        from ..io import resize_to_multiple

        return resize_to_multiple(load_image(_flatten(picture).convert("RGB")), multiple)

    return AppModel(
        name=os.fspath(model),
        title=f"{os.fspath(model)} ({family})",
        load=lambda: api.load_backbone(model, family=family, device=device, dtype=dtype, quiet=True),
        to_input=to_input,
        to_picture=to_pil,
        note=f"Image sides are resized to multiples of {multiple} when needed.",
    )
