"""The record of one dataset edit, shared by every dataset layout (FlowEdit's, PIE-Bench's).

Kept apart from the parsers so that each layout's module (:mod:`coupled_sde.runs.triplets`,
:mod:`coupled_sde.runs.pie_bench`) depends on it and neither on the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Triplet"]


@dataclass(frozen=True)
class Triplet:
    """One edit of a dataset: ``image`` edited from ``source_prompt`` to ``target_prompt``."""

    id: str
    image: Path
    source_prompt: str
    target_prompt: str
    mask: Path | None = None
    #: PIE-Bench's ``editing_type_id`` ("0".."9"), when the dataset has one.
    edit_type: str | None = None
    #: PIE-Bench's editing instruction, when the dataset has one.
    instruction: str | None = None
    #: PIE-Bench's run-length-encoded edit region, for evaluation only (the methods never see it).
    eval_mask: tuple[int, ...] | None = None
