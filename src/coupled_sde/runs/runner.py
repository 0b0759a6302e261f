"""Run every (triplet x method x setting x seed) edit of a dataset, resumably, optionally with metrics.

:func:`run_dataset` is the engine behind ``coupled-sde run`` and the ``accelerate`` launcher:

1. plan the edits of this shard (every ``shards``-th triplet, starting at ``shard_index``);
2. drop those already in any result file of the output folder (a resumed run redoes nothing);
3. if anything is left: check image sizes, load the model (not before: a finished run costs
   nothing), then for each edit save the image under ``images/<method>/<setting>/`` and append its
   CSV row -- cost, paths, resolved settings and, with metrics on, CLIP / LPIPS / DINO / L1 between
   the source and the saved edit.

An edit that raises -- or whose image or mask fails to decode -- is recorded with its error and
retried by the next run, whose row then replaces the failed one; the others go on. One process at
a time writes a result file (:class:`~coupled_sde.runs.results.FolderLock`: a second run on the
same folder and shard stops at once with a one-line error instead of redoing the work), and the
temporary files of killed processes are removed when the next run starts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .results import FolderLock, ResultsWriter, clean_stale_tmp, compact_results, done_keys, results_path
from .settings import load_settings, settings_key, settings_slug
from .triplets import Triplet

__all__ = ["Job", "RunReport", "build_metrics", "plan", "run_dataset"]


@dataclass(frozen=True)
class Job:
    """One edit of a run."""

    triplet: Triplet
    method: str
    settings: dict[str, Any]
    seed: int

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Its identity in result files (see :func:`coupled_sde.runs.results.row_key`)."""
        return (self.triplet.id, self.method, settings_key(self.settings), str(self.seed))

    def output(self, out_dir: Path) -> Path:
        """Where its image goes: ``images/<method>/<setting>/<triplet id>-seed<seed>.png``."""
        return out_dir / "images" / self.method / settings_slug(self.settings) / f"{self.triplet.id}-seed{self.seed}.png"


@dataclass
class RunReport:
    """What a call of :func:`run_dataset` did (for its shard)."""

    results: Path
    planned: int
    skipped: int
    edited: int
    failed: int
    seconds: float

    def __str__(self) -> str:
        return (
            f"{self.edited} edited, {self.skipped} already done, {self.failed} failed "
            f"(of {self.planned} in this shard) in {self.seconds:.1f} s; results: {self.results}"
        )


def plan(
    triplets: Sequence[Triplet],
    methods: Sequence[str],
    settings: dict[str, list[dict[str, Any]]],
    seeds: Sequence[int],
    shards: int = 1,
    shard_index: int = 0,
) -> list[Job]:
    """The edits of one shard, triplet-major (each image is loaded once)."""
    if shards < 1 or not 0 <= shard_index < shards:
        raise ValueError(f"need shards >= 1 and 0 <= shard_index < shards, got shards={shards}, shard_index={shard_index}")
    return [
        Job(t, m, s, int(seed)) for t in triplets[shard_index::shards] for m in methods for s in settings[m] for seed in seeds
    ]


def build_metrics(spec: str, device: Any = None, lpips_weights: Sequence[str] | None = None) -> Any:
    """Metrics from a name: ``"paper"`` (CLIP ViT-L/14@336, LPIPS-VGG at 1024², DINO ViT-S/16, L1;
    LPIPS needs its two local weight files), ``"pixel"`` (L1 only, nothing to download) or
    ``"tiny"`` (random tiny networks: smoke tests only, the numbers mean nothing)."""
    from coupled_sde.metrics import EditMetrics, l1_255

    if spec == "pixel":
        return EditMetrics(clip=None, lpips=None, dino=None, l1=l1_255)
    if spec == "tiny":
        return EditMetrics.tiny(0)
    if spec == "paper":
        if not lpips_weights or len(lpips_weights) != 2:
            raise ValueError(
                "the paper's metrics need LPIPS's two weight files: --lpips-weights vgg16-397923af.pth vgg.pth "
                "(torchvision's VGG16 and lpips' v0.1 'vgg' heads; see coupled_sde.metrics.lpips)"
            )
        return EditMetrics.from_pretrained(lpips_weights[0], lpips_weights[1], device=device)
    raise ValueError(f"unknown metrics {spec!r}; choose paper, pixel or tiny")


def _check_run_folder(out_dir: Path, model_name: str | None) -> None:
    """Refuse to mix models in one folder: resuming must not skip edits made with another model."""
    marker = out_dir / "run.json"
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text()).get("model")
        except (json.JSONDecodeError, AttributeError):
            recorded = None
        if model_name is not None and recorded is not None and recorded != model_name:
            raise ValueError(
                f"{str(out_dir)!r} holds results of model {recorded!r}, not {model_name!r}; use another --out folder"
            )
        return
    if model_name is not None:
        tmp = out_dir / f".run.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"model": model_name}, indent=1) + "\n")
        os.replace(tmp, marker)


def _check_sizes(jobs: Sequence[Job], multiple: int, resize: bool) -> None:
    """All images of the pending edits fit the model (or will be resized); masks match their image."""
    from coupled_sde.io import check_size, image_size

    bad: list[str] = []
    for t in {j.triplet.id: j.triplet for j in jobs}.values():
        h, w = image_size(t.image)
        if t.mask is not None and image_size(t.mask) != (h, w):
            bad.append(f"{t.id}: mask {t.mask} is not {h}x{w} like its image")
        if not resize:
            try:
                check_size(h, w, multiple)
            except ValueError as e:
                bad.append(f"{t.id} ({t.image}): {str(e).split('. ')[0]}")
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ValueError(f"{len(bad)} image(s) can't be edited: " + "; ".join(bad[:5]) + more + ". Pass --resize to resize them")


def _validate(per_method: dict[str, list[dict[str, Any]]]) -> None:
    """Every setting's value, checked without a model (types, ranges, finite numbers)."""
    from coupled_sde.commands._runtime import check_finite

    for method, settings in per_method.items():
        for s in settings:
            check_finite(s, method)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_dataset(
    model: Any,
    triplets: Sequence[Triplet],
    out_dir: str | os.PathLike,
    *,
    methods: Sequence[str] = ("sync-sde",),
    settings: Any = None,
    seeds: Sequence[int] = (0,),
    metrics: Any = None,
    lpips_weights: Sequence[str] | None = None,
    shards: int = 1,
    shard_index: int = 0,
    resize: bool = False,
    device: Any = None,
    dtype: Any = None,
    offload: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = _stderr,
) -> RunReport:
    """Edit a dataset into ``out_dir``; resumes from whatever result files are already there.

    Args:
        model: hub id or local folder (loaded only if an edit is pending), diffusers pipeline or backbone.
        triplets: from :func:`~coupled_sde.runs.triplets.load_triplets`.
        methods: editing methods to run on every triplet.
        settings: a settings specification (:func:`~coupled_sde.runs.settings.load_settings`:
            a path, inline JSON, a list of dicts, a grid or per-method ones); ``None`` = defaults.
        seeds: every edit is made once per seed.
        metrics: ``None``, a name for :func:`build_metrics` (``"paper"``, ``"pixel"``, ``"tiny"``)
            or a callable ``metrics(source, edited, target_prompts) -> {"clip": (B,), ...}``
            such as :class:`coupled_sde.metrics.EditMetrics`.
        shards, shard_index: process every ``shards``-th triplet from ``shard_index``, writing
            ``results.shard{shard_index}.csv`` (merge with :func:`~coupled_sde.runs.results.merge_results`).
        resize: resize images to the nearest size the model takes instead of refusing them.
        device, dtype, offload: for loading ``model`` (see :func:`~coupled_sde.editing.api.load_backbone`).
        progress: a progress bar over the edits.
        log: where messages go (``None``: silent).
    """
    from coupled_sde.commands._runtime import check_device

    t0 = time.perf_counter()
    say = log or (lambda message: None)
    out = Path(out_dir).expanduser()
    methods = list(methods)
    per_method = load_settings(settings, methods)
    _validate(per_method)  # bad values fail now, not edit by edit after the model load
    check_device(None if device is None else str(device))
    jobs = plan(list(triplets), methods, per_method, list(seeds), shards, shard_index)
    runtime = dict(
        metrics=metrics,
        lpips_weights=lpips_weights,
        shards=shards,
        shard_index=shard_index,
        resize=resize,
        device=device,
        dtype=dtype,
        offload=offload,
        progress=progress,
        say=say,
    )
    out.mkdir(parents=True, exist_ok=True)
    model_name = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
    csv_path = results_path(out, shards, shard_index)
    with FolderLock(csv_path):  # one writer per result file: a second run fails now, not after redoing the work
        _check_run_folder(out, model_name)
        clean_stale_tmp(out)
        done = done_keys(out)
        pending = [j for j in jobs if j.key not in done]
        compact_results(csv_path, retry={j.key for j in pending})  # a retry replaces its failed row
        report = RunReport(csv_path, len(jobs), len(jobs) - len(pending), 0, 0, 0.0)
        if pending:
            _run_pending(pending, model, model_name, out, csv_path, methods, per_method, report, **runtime)
    report.seconds = time.perf_counter() - t0
    return report


def _run_pending(
    pending: list[Job],
    model: Any,
    model_name: str | None,
    out: Path,
    csv_path: Path,
    methods: list[str],
    per_method: dict[str, list[dict[str, Any]]],
    report: RunReport,
    *,
    metrics: Any,
    lpips_weights: Sequence[str] | None,
    shards: int,
    shard_index: int,
    resize: bool,
    device: Any,
    dtype: Any,
    offload: bool,
    progress: bool,
    say: Callable[[str], None],
) -> None:
    """Load the model (only now: a finished run costs nothing), then make and record each pending edit."""
    from coupled_sde.editing import api

    if model_name is not None:
        from coupled_sde.backends.registry import backbone_class
        from coupled_sde.commands._runtime import check_hub_model, check_settings_for

        check_hub_model(model_name)
        family = api.model_family(model_name)
        for method in methods:  # against the model's declared defaults: bad values fail before the load
            for s in per_method[method]:
                check_settings_for(backbone_class(family), method, s)
        _check_sizes(pending, api.size_multiple(model_name, family), resize)
        say(f"loading {model_name} ({family}) ...")
        backbone = api.load_backbone(model_name, family=family, device=device, dtype=dtype, offload=offload, quiet=not progress)
    else:
        backbone = api.as_backbone(model)
        _check_sizes(pending, api.backbone_multiple(backbone), resize)
    for method in methods:  # unknown or conflicting settings fail before the first edit
        for s in per_method[method]:
            api.resolve_settings(backbone, method, s)
    scorer = (
        build_metrics(metrics, device=api.execution_device(backbone), lpips_weights=lpips_weights)
        if isinstance(metrics, str)
        else metrics
    )

    with ResultsWriter(csv_path) as writer:
        bar = _progress(len(pending), f"shard {shard_index}/{shards}" if shards > 1 else "edits", progress)
        source: tuple[str, Any, Any, str | None] | None = None
        try:
            for job in pending:
                if source is None or source[0] != job.triplet.id:
                    try:
                        source = (job.triplet.id, *_load(job.triplet, backbone, resize), None)
                    except Exception as e:  # passed the header check but does not decode: this triplet's rows fail
                        source = (job.triplet.id, None, None, _error(e))
                if source[3] is not None:
                    row = {**_row(job), "error": source[3]}
                else:
                    row = _edit(job, source[1], source[2], backbone, scorer, out)
                writer.write(row)
                if row["error"]:
                    report.failed += 1
                    say(
                        f"edit {job.triplet.id} / {job.method} / {settings_key(job.settings)} / seed {job.seed} failed: {row['error']}"
                    )
                else:
                    report.edited += 1
                bar.update(1)
        finally:
            bar.close()


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="edit")


def _load(triplet: Triplet, backbone: Any, resize: bool) -> tuple[Any, Any]:
    """The triplet's image (resized if asked) on the backbone's device, and its mask at that size."""
    from coupled_sde.editing import api

    x, mask = api.load_inputs(triplet.image, triplet.mask, api.backbone_multiple(backbone), resize)
    return x.to(api.execution_device(backbone)), mask


def _edit(job: Job, image: Any, mask: Any, backbone: Any, scorer: Any, out: Path) -> dict[str, Any]:
    """Run one edit, save its image, score it; the CSV row (with ``error`` set if anything raised)."""
    import torch

    from coupled_sde.editing import api
    from coupled_sde.io import load_image, save_image, to_pil

    t = job.triplet
    row = {**_row(job), "height": int(image.shape[-2]), "width": int(image.shape[-1])}
    try:
        with torch.inference_mode():
            result = api.edit_tensor(
                backbone, image, t.source_prompt, t.target_prompt, job.method, seed=job.seed, mask=mask, **job.settings
            )
            path = save_image(result.images, job.output(out), force=True)  # a file without a row is an interrupted leftover
            row.update(
                output=path.relative_to(out).as_posix(),
                model_calls=result.model_calls,
                model_evaluations=result.model_evaluations,
                seconds=f"{result.seconds:.4f}",
                resolved=json.dumps(result.settings, sort_keys=True, default=str),
            )
            if scorer is not None:
                edited = load_image(to_pil(result.images)).to(image.device)  # score what is on disk (8-bit)
                scores = scorer(image, edited, [t.target_prompt])
                for name, value in scores.items():
                    if name in ("clip", "lpips", "dino", "l1"):
                        row[name] = repr(float(torch.as_tensor(value).reshape(-1)[0]))
    except Exception as e:  # one failed edit must not stop a dataset run; it is recorded and retried next time
        row["error"] = _error(e)
    return row


def _row(job: Job) -> dict[str, Any]:
    """The columns of a job's row that do not depend on its outcome."""
    t = job.triplet
    return {
        "triplet_id": t.id,
        "method": job.method,
        "settings": settings_key(job.settings),
        "seed": job.seed,
        "source_image": str(t.image),
        "source_prompt": t.source_prompt,
        "target_prompt": t.target_prompt,
        "mask": "" if t.mask is None else str(t.mask),
        "error": "",
    }


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".replace("\n", " ")
