"""Guided batching: K conditioned members plus their classifier-free-guidance rows in one model call.

Every text-to-image backbone evaluates the same thing: for K members (each with its own prompt)
and a batch of B latents, the conditional prediction of every member, plus an *unconditional* (or
negative-prompt) prediction for the members that use classifier-free guidance (Ho & Salimans,
2022), combined as ``out_uncond + scale (out_cond - out_uncond)``. :class:`GuidedBatch` lays these
out as one model batch -- rows ``[member 0 .. member K-1, uncond of guided member 0 .., ...]``,
each ``B`` latents long -- and combines the model's output back into ``(K, B, ...)``. The texts
are deduplicated beforehand (:func:`~coupled_sde.backends.hf._common.dedupe`), so each model
row indexes one row of the encoded text embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["GuidedBatch"]


@dataclass(frozen=True)
class GuidedBatch:
    """Where each member's text lives, and which members are guided by which unconditional text.

    Attributes:
        prompt_rows: row of each member's prompt in the encoded texts, ``(K,)`` long.
        guided: indices of the members with a guidance row, ``(Kc,)`` long.
        uncond_rows: row of each guided member's unconditional (negative) text, ``(Kc,)`` long.
        scales: each guided member's guidance scale, float32 ``(Kc,)``.
    """

    prompt_rows: torch.Tensor
    guided: torch.Tensor
    uncond_rows: torch.Tensor
    scales: torch.Tensor

    @classmethod
    def build(
        cls, prompt_rows: list[int], guided: dict[int, tuple[int, float]], device: torch.device | str | None = None
    ) -> GuidedBatch:
        """``prompt_rows[k]``: member k's text row; ``guided[k] = (uncond_row, scale)`` for guided members."""
        members = sorted(guided)
        return cls(
            prompt_rows=torch.tensor(prompt_rows, dtype=torch.long, device=device),
            guided=torch.tensor(members, dtype=torch.long, device=device),
            uncond_rows=torch.tensor([guided[k][0] for k in members], dtype=torch.long, device=device),
            scales=torch.tensor([guided[k][1] for k in members], dtype=torch.float32, device=device),
        )

    @property
    def members(self) -> int:
        """K, the number of conditioned members."""
        return int(self.prompt_rows.shape[0])

    @property
    def rows_per_sample(self) -> int:
        """Model rows per latent: K members plus one per guided member."""
        return self.members + int(self.guided.shape[0])

    def text_rows(self, batch: int) -> torch.Tensor:
        """The encoded-text row of every model row, ``(rows_per_sample * batch,)``."""
        return torch.cat([self.prompt_rows, self.uncond_rows]).repeat_interleave(batch)

    def member_of_row(self, batch: int) -> torch.Tensor:
        """The member each model row belongs to (for per-member knobs such as a guidance embedding)."""
        members = torch.arange(self.members, device=self.prompt_rows.device)
        return torch.cat([members, self.guided]).repeat_interleave(batch)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Model input ``(rows_per_sample * B, *latent)`` from member states ``x`` ``(K, B, *latent)``."""
        members, batch = x.shape[:2]
        if members != self.members:
            raise ValueError(f"x has {members} members but the conditions were encoded for {self.members}")
        flat = x.reshape(members * batch, *x.shape[2:])
        if not self.guided.numel():
            return flat
        extra = x[self.guided.to(x.device)].reshape(-1, *x.shape[2:])
        return torch.cat([flat, extra])

    def combine(self, out: torch.Tensor, batch: int, rescale_dim: int | None = None) -> torch.Tensor:
        """Model output ``(rows_per_sample * B, *rest)`` to guided member predictions ``(K, B, *rest)``.

        ``rescale_dim`` renormalises each guided prediction to the norm of its conditional one along
        that dimension of ``rest`` (Qwen-Image's pipeline does this over the token features).
        """
        rest = out.shape[1:]
        cond = out[: self.members * batch].view(self.members, batch, *rest)
        if not self.guided.numel():
            return cond
        guided = self.guided.to(out.device)
        uncond = out[self.members * batch :].view(-1, batch, *rest)
        scale = self.scales.to(device=out.device, dtype=out.dtype).view(-1, *([1] * (len(rest) + 1)))
        positive = cond[guided]
        mixed = uncond + scale * (positive - uncond)
        if rescale_dim is not None:
            dim = rescale_dim % len(rest) + 2
            mixed = mixed * (positive.norm(dim=dim, keepdim=True) / mixed.norm(dim=dim, keepdim=True))
        cond = cond.clone()
        cond[guided] = mixed
        return cond
