"""Output folders that never overwrite a user's files silently."""

from __future__ import annotations

from pathlib import Path


def claim_outputs(folder: str | Path, names: list[str], force: bool) -> list[Path]:
    """The output paths in ``folder`` (created), refusing existing files unless ``force``."""
    out = Path(folder)
    paths = [out / n for n in names]
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise FileExistsError(
            f"{', '.join(existing)} already exist(s); pass --force to overwrite or --out to choose another folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    return paths
