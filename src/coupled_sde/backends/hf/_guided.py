"""Which encoded text each model row uses, for :func:`coupled_sde.backends.base.guided_predict`.

``guided_predict`` lays out one model batch -- every member's rows, then a guidance row for each
guided member -- and tells the backbone, per row, its ``member`` and whether it is a guidance
(``negative``) row. The text-to-image backbones encode the distinct texts once per edit
(:func:`~coupled_sde.backends.hf._common.dedupe`); :class:`TextRows` records which of those rows is
each member's prompt and each guided member's unconditional (negative) text, and maps a model row
to its text row.

Which members are guided, against which text and at which scale, is decided once here for every
backbone: :func:`plan_native_cfg` for models whose native knob is classifier-free guidance (SD, SDXL,
SD3, Qwen-Image, base FLUX.2 Klein), :func:`plan_true_cfg` for guidance-distilled ones with true CFG on
top (FLUX.1, FLUX.2 dev); :func:`text_rows` then lists the distinct texts to encode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from coupled_sde.backends.base import Condition
from coupled_sde.backends.hf._common import dedupe, prompt_text, warn

__all__ = ["PooledTextConditions", "TextRows", "check_rescale", "plan_native_cfg", "plan_true_cfg", "reject_true_cfg", "text_rows"]

#: Guided members: ``{k: (unconditional text, scale)}``, in member order; a ``None`` text is the
#: zero embedding (SDXL's ``force_zeros_for_empty_prompt``).
Guided = dict[int, tuple[str | None, float]]


@dataclass(frozen=True)
class TextRows:
    """Each member's prompt row and, for the guided members, their unconditional row and scale.

    Attributes:
        prompt_rows: row of each member's prompt in the encoded texts, ``(K,)`` long, on the CPU.
        uncond_rows: row of each member's unconditional text, ``(K,)`` long (only read for guided members).
        guided: indices of the members with a guidance row, ``(G,)`` long.
        scales: each guided member's guidance scale, float32 ``(G,)``.
    """

    prompt_rows: torch.Tensor
    uncond_rows: torch.Tensor
    guided: torch.Tensor
    scales: torch.Tensor

    @classmethod
    def build(cls, prompt_rows: list[int], guided: dict[int, tuple[int, float]]) -> TextRows:
        """``prompt_rows[k]``: member k's text row; ``guided[k] = (uncond_row, scale)`` for the guided members."""
        members = sorted(guided)
        uncond = [guided[k][0] if k in guided else 0 for k in range(len(prompt_rows))]
        return cls(
            prompt_rows=torch.tensor(prompt_rows, dtype=torch.long),
            uncond_rows=torch.tensor(uncond, dtype=torch.long),
            guided=torch.tensor(members, dtype=torch.long),
            scales=torch.tensor([guided[k][1] for k in members], dtype=torch.float32),
        )

    @property
    def members(self) -> int:
        """K, the number of conditioned members."""
        return int(self.prompt_rows.shape[0])

    def rows(self, member: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """The text row of each model row (``member``, ``negative`` as ``guided_predict`` passes them)."""
        member, negative = member.cpu(), negative.cpu()
        return torch.where(negative, self.uncond_rows[member], self.prompt_rows[member])

    def check(self, x: torch.Tensor) -> None:
        """``x`` ``(K, B, ...)`` must have as many members as were encoded."""
        if x.shape[0] != self.members:
            raise ValueError(f"x has {x.shape[0]} members but the conditions were encoded for {self.members}")


@dataclass(frozen=True)
class PooledTextConditions:
    """Encoded distinct texts with their pooled projections, and the members' rows (SD3, SDXL).

    Attributes:
        prompt_embeds: the encoders' hidden states of the distinct texts ``(U, L, dim)``, model dtype.
        pooled_prompt_embeds: their pooled projections ``(U, pooled_dim)``.
        rows: the members' text rows and their CFG rows (:class:`TextRows`).
        model_device: where the denoiser's inputs go, looked up once per edit.
    """

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    rows: TextRows
    model_device: torch.device | None = None

    @property
    def members(self) -> int:
        """K, the number of conditioned members."""
        return self.rows.members


def check_rescale(guidance_rescale: float) -> float:
    """A ``guidance_rescale`` for :func:`~coupled_sde.backends.base.guided_predict` (Lin et al. 2024): in [0, 1]."""
    if not 0.0 <= guidance_rescale <= 1.0:
        raise ValueError(f"guidance_rescale must lie in [0, 1], got {guidance_rescale!r}")
    return float(guidance_rescale)


def check_members(conditions: list[Condition]) -> None:
    """An edit needs at least one member."""
    if not conditions:
        raise ValueError("encode_conditions needs at least one Condition")


def reject_true_cfg(conditions: list[Condition], why: str) -> None:
    """``true_cfg`` must stay 1 on models whose native knob already is CFG; ``why`` ends the message
    ``member k: true_cfg=... does not apply<why>``."""
    check_members(conditions)
    for k, c in enumerate(conditions):
        if c.true_cfg != 1:
            raise ValueError(f"member {k}: true_cfg={c.true_cfg} does not apply{why}")


def plan_native_cfg(
    conditions: list[Condition],
    default_guidance: float,
    *,
    above_one: bool = False,
    negative: str | None = "",
    guidance_free: bool = False,
) -> tuple[list[str], Guided]:
    """The members' prompts and guided members where ``guidance`` *is* the CFG scale.

    ``guidance`` ``None`` -> ``default_guidance``; a member is guided when its scale is ``!= 1`` (the
    SD pipelines) or ``> 1`` (``above_one``: Qwen-Image, FLUX.2 Klein), against its
    ``negative_prompt`` or, without one, ``negative``. A negative prompt that has no effect is
    reported (peers silently drop it), except on ``guidance_free`` (step-distilled) models, where
    no member is guided and the caller says why.
    """
    prompts = [prompt_text(c.prompt) for c in conditions]
    if guidance_free:
        scales = [1.0] * len(conditions)
    else:
        scales = [default_guidance if c.guidance is None else float(c.guidance) for c in conditions]
    guided: Guided = {
        k: (negative if conditions[k].negative_prompt is None else prompt_text(conditions[k].negative_prompt), g)
        for k, g in enumerate(scales)
        if (g > 1 if above_one else g != 1)
    }
    if not guidance_free:
        threshold = "<= 1" if above_one else "1"
        for k, c in enumerate(conditions):
            if k not in guided and c.negative_prompt is not None:
                warn(f"member {k}: negative_prompt is ignored with guidance {threshold} (no classifier-free guidance)", 4)
    return prompts, guided


def plan_true_cfg(conditions: list[Condition]) -> tuple[list[str], Guided]:
    """The members' prompts and guided members of a guidance-distilled model with true CFG on top.

    As ``FluxPipeline``: a member is guided when ``true_cfg > 1`` **and** it has a
    ``negative_prompt``, at scale ``true_cfg``; either one alone is ignored with a warning.
    """
    check_members(conditions)
    prompts = [prompt_text(c.prompt) for c in conditions]
    guided: Guided = {
        k: (prompt_text(c.negative_prompt), c.true_cfg)
        for k, c in enumerate(conditions)
        if c.true_cfg > 1 and c.negative_prompt is not None
    }
    for k, c in enumerate(conditions):
        if k not in guided and c.negative_prompt is not None:
            warn(f"member {k}: negative_prompt is ignored unless true_cfg > 1 (got true_cfg={c.true_cfg})", 4)
        if k not in guided and c.true_cfg > 1:
            warn(f"member {k}: true_cfg={c.true_cfg} is ignored without a negative_prompt", 4)
    return prompts, guided


def text_rows(prompts: list[str], guided: Guided) -> tuple[list[str], TextRows]:
    """The distinct texts to encode (prompts, then unconditional texts, first-seen order) and the rows.

    A ``None`` unconditional text (the zero embedding) is given the row after the encoded texts:
    the caller appends that zero row.
    """
    unique, row = dedupe(prompts + [u for u, _ in guided.values() if u is not None])
    if any(u is None for u, _ in guided.values()):
        row[None] = len(unique)
    return unique, TextRows.build([row[p] for p in prompts], {k: (row[u], s) for k, (u, s) in guided.items()})
