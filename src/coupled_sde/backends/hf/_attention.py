"""The value projection of diffusers attention modules, tapped through their attention processors.

Attention sharing (RF-Solver-Edit, FireFlow; :mod:`coupled_sde.editing.value_sharing`) must read and
replace ``V = to_v(hidden_states)`` inside chosen attention layers. diffusers' extension point for
that is the attention processor; rather than re-implementing a model's processor (its rotary
embedding, its attention backends, its parallel configs, which change between releases),
:class:`ValueTapProcessor` wraps the processor the module already has and, for the length of one
call, hooks the module's ``to_v`` projection. Whatever backend or variant the wrapped processor runs,
it computes attention from the tapped value. :func:`tapped_values` installs the wrappers for the
duration of a ``with`` block and always puts the original processors back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["ValueTapProcessor", "tapped_values"]

#: ``tap(layer, value) -> value``: sees (and may replace) a layer's value projection.
Tap = Callable[[int, torch.Tensor], torch.Tensor]


class ValueTapProcessor:
    """An attention processor that runs ``inner`` with ``attn.to_v``'s output passed through ``tap``."""

    def __init__(self, inner: Any, layer: int, tap: Tap) -> None:
        self.inner, self.layer, self.tap = inner, int(layer), tap

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
        **kwargs: Any,
    ) -> Any:
        handle = attn.to_v.register_forward_hook(self._hook)
        try:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb, **kwargs)
        finally:
            handle.remove()

    def _hook(self, module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return self.tap(self.layer, output)


@contextmanager
def tapped_values(modules: Mapping[int, Any], tap: Tap) -> Iterator[None]:
    """Within the block, every attention module ``modules[layer]`` passes its value projection through ``tap``.

    Fused projections (``fuse_qkv_projections()``) compute ``V`` inside one ``to_qkv`` matrix, where
    it cannot be tapped alone: they are refused with the call that undoes them.
    """
    for layer, attn in modules.items():
        if getattr(attn, "fused_projections", False) or not isinstance(getattr(attn, "to_v", None), torch.nn.Module):
            raise ValueError(
                f"attention layer {layer} computes its values inside fused projections; attention sharing needs them "
                "separate: call pipe.transformer.unfuse_qkv_projections() first"
            )
    originals = {layer: attn.processor for layer, attn in modules.items()}
    try:
        for layer, attn in modules.items():
            attn.set_processor(ValueTapProcessor(originals[layer], layer, tap))
        yield
    finally:
        for layer, attn in modules.items():
            attn.set_processor(originals[layer])
