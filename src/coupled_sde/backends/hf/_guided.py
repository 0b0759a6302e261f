"""Which encoded text each model row uses, for :func:`coupled_sde.backends.base.guided_predict`.

``guided_predict`` lays out one model batch -- every member's rows, then a guidance row for each
guided member -- and tells the backbone, per row, its ``member`` and whether it is a guidance
(``negative``) row. The text-to-image backbones encode the distinct texts once per edit
(:func:`~coupled_sde.backends.hf._common.dedupe`); :class:`TextRows` records which of those rows is
each member's prompt and each guided member's unconditional (negative) text, and maps a model row
to its text row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["TextRows"]


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
