"""Result files of dataset runs: one CSV row per edit, appended and flushed as each edit finishes.

A run may be interrupted at any point (a preempted GPU job, Ctrl-C). Rows are written only after
the edited image is safely on disk, each row is flushed and fsynced, and a half-written last line
left by a crash is cut off before appending, so the CSV always lists exactly the finished edits.
Restarting reads every result file in the output folder and skips the edits already done, keyed
by (triplet id, method, settings, seed) -- see :func:`row_key`.

A result file has one writer at a time: :class:`FolderLock` (an ``fcntl`` lock on a file next to
it) makes a second run on the same folder and shard fail at once instead of redoing every edit. The
writer that holds the lock :func:`compact_results` (a retried edit replaces its failed row) and
:func:`clean_stale_tmp` (temporary files left by a killed process).

Sharded runs write ``results.shard{i}.csv``; :func:`merge_results` concatenates them (and an
existing ``results.csv``) into ``results.csv``, keeping one row per key.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "COLUMNS",
    "RunLockedError",
    "METRIC_COLUMNS",
    "FolderLock",
    "ResultsWriter",
    "clean_stale_tmp",
    "compact_results",
    "done_keys",
    "merge_results",
    "read_results",
    "read_run",
    "result_files",
    "results_path",
    "row_key",
    "unique_rows",
]

#: Metric columns (empty when metrics are off): CLIP score (up), LPIPS, DINO distance, L1 on 0..255 (down).
METRIC_COLUMNS = ("clip", "lpips", "dino", "l1")

#: Every result file has exactly these columns, in this order.
COLUMNS = (
    "triplet_id",
    "method",
    "settings",
    "seed",
    "source_image",
    "source_prompt",
    "target_prompt",
    "mask",
    "output",
    "height",
    "width",
    "model_calls",
    "model_evaluations",
    "seconds",
    *METRIC_COLUMNS,
    "resolved",
    "error",
)

_SHARD = re.compile(r"^results\.shard(\d+)\.csv$")


def results_path(out_dir: str | os.PathLike, shards: int = 1, shard_index: int = 0) -> Path:
    """``results.csv``, or ``results.shard{i}.csv`` for shard ``i`` of a sharded run."""
    name = "results.csv" if shards == 1 else f"results.shard{shard_index}.csv"
    return Path(out_dir) / name


def result_files(out_dir: str | os.PathLike) -> list[Path]:
    """``results.csv`` (if any) then the shard files in shard order."""
    d = Path(out_dir)
    shards = sorted((p for p in d.glob("results.shard*.csv") if _SHARD.match(p.name)), key=lambda p: int(_SHARD.match(p.name)[1]))
    main = d / "results.csv"
    return ([main] if main.is_file() else []) + shards


def row_key(row: dict[str, Any]) -> tuple[str, str, str, str]:
    """What identifies an edit: (triplet id, method, settings JSON, seed)."""
    return (str(row["triplet_id"]), str(row["method"]), str(row["settings"]), str(row["seed"]))


def read_results(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[dict[str, str]]:
    """All well-formed rows of one or more result files (a folder means all its result files).

    Rows cut short by a crash (missing fields) are ignored.
    """
    if isinstance(paths, (str, os.PathLike)):
        p = Path(paths)
        paths = result_files(p) if p.is_dir() else [p]
    rows: list[dict[str, str]] = []
    for path in paths:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("triplet_id", "method", "settings", "seed") if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{str(path)!r} is not a coupled-sde results file (no column(s) {missing})")
            for row in reader:
                if None in row or any(v is None for v in row.values()):  # too many / too few fields
                    continue
                rows.append(row)
    return rows


def unique_rows(rows: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """One row per edit key, in first-seen order: a row without error wins over failed attempts, otherwise the first seen.

    What reading several result files of one run needs (``results.csv`` next to the shard files it
    was merged from lists every edit twice; a failed attempt may precede its successful retry).
    """
    unique: dict[tuple[str, str, str, str], dict[str, str]] = {}
    for row in rows:
        key = row_key(row)
        if key not in unique or (unique[key].get("error") and not row.get("error")):
            unique[key] = row
    return list(unique.values())


def read_run(source: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a run folder (all its result files) or of one results CSV, one per edit (:func:`unique_rows`).

    Raises ``FileNotFoundError`` for a missing path or a folder without result files.
    """
    p = Path(source)
    if p.is_dir():
        files = result_files(p)
        if not files:
            raise FileNotFoundError(f"no results.csv or results.shard*.csv in {str(p)!r}")
    elif p.is_file():
        files = [p]
    else:
        raise FileNotFoundError(f"no results file or folder {str(p)!r}")
    return unique_rows(read_results(files))


def done_keys(out_dir: str | os.PathLike) -> set[tuple[str, str, str, str]]:
    """Keys of the edits finished without error, over every result file in ``out_dir``."""
    return {row_key(r) for r in read_results(result_files(out_dir)) if not r.get("error")}


def _repair_tail(path: Path) -> None:
    """Cut a half-written last line (no trailing newline) left by a crash."""
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        block = min(size, 1 << 20)
        f.seek(size - block)
        tail = f.read(block)
        cut = tail.rfind(b"\n")
        f.truncate(size - block + cut + 1 if cut >= 0 else 0)


class ResultsWriter:
    """Appends rows to a result file, writing the header first if the file is new or empty.

    Use as a context manager; every :meth:`write` is flushed and fsynced before it returns.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _repair_tail(self.path)
            with open(self.path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), None)
            if header is not None and tuple(header) != COLUMNS:
                raise ValueError(f"{str(self.path)!r} has other columns than this version writes; use another output folder")
        self._file = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=COLUMNS)
        if self._file.tell() == 0:
            self._writer.writeheader()
            self._sync()

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (missing columns are written empty) and make it durable."""
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown result columns {sorted(unknown)}")
        self._writer.writerow({c: "" if row.get(c) is None else row[c] for c in COLUMNS})
        self._sync()

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunLockedError(RuntimeError):
    """Another process is writing the same result file."""


class FolderLock:
    """An exclusive, non-blocking ``fcntl.flock`` on ``<results file>.lock``, held while a run writes it.

    The kernel drops the lock when its process ends, however it ends (SIGKILL included), so a killed
    run never leaves a stale lock behind. The lock file holds the owner's pid, for the message. On
    platforms without ``fcntl`` (Windows) the lock is a no-op.
    """

    def __init__(self, results: str | os.PathLike) -> None:
        p = Path(results)
        self.path = p.with_name(f".{p.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            who = f" (pid {owner})" if owner.isdigit() else ""
            raise RunLockedError(
                f"another run{who} is writing {str(self.path.parent)!r} ({self.path.name[1:-5]}); wait for it to finish, "
                "or give this one another --out or --shard-index"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


_TMP = re.compile(r"^\..+\.(\d+)\.tmp$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_tmp(out_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.<name>.<pid>.tmp``, from atomic writes) of processes that no longer run.

    A process killed between writing such a file and renaming it leaves it behind; the file is
    never a result (rows and images appear only through the rename). Files of live processes (a
    concurrent shard) are kept. Returns the deleted paths.
    """
    removed = []
    for p in Path(out_dir).rglob(".*.tmp"):
        m = _TMP.match(p.name)
        if m and p.is_file() and not _alive(int(m[1])):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _write_atomic(target: Path, rows: Iterable[dict[str, Any]]) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in COLUMNS})
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    try:  # make the rename itself durable
        dir_fd = os.open(target.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory descriptors
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def compact_results(path: str | os.PathLike, retry: Iterable[tuple[str, str, str, str]] = ()) -> int:
    """Rewrite a result file with one row per edit, atomically; returns the number of rows dropped.

    A successful row wins (the first one); otherwise the last failed attempt is kept -- unless the
    key is in ``retry`` (about to be run again), whose failed rows are dropped so that the retry's row
    replaces them. Rows cut short by a crash are dropped too. Call it only while holding the
    :class:`FolderLock` of ``path``.
    """
    p = Path(path)
    if not p.is_file():
        return 0
    with open(p, newline="", encoding="utf-8") as f:
        total = max(sum(1 for _ in csv.reader(f)) - 1, 0)
    if total == 0:
        return 0
    retry = set(retry)
    kept: dict[tuple[str, str, str, str], dict[str, str]] = {}
    for row in read_results(p):
        key = row_key(row)
        if row.get("error"):
            if key in retry:
                continue
            if key not in kept or kept[key].get("error"):
                kept.pop(key, None)  # keep the latest failure, at its place in time
                kept[key] = row
        elif key not in kept or kept[key].get("error"):
            kept.pop(key, None)
            kept[key] = row
    dropped = total - len(kept)
    if dropped:
        _write_atomic(p, kept.values())
    return dropped


def merge_results(out_dir: str | os.PathLike, remove_shards: bool = False) -> Path:
    """Concatenate ``results.csv`` and ``results.shard*.csv`` of ``out_dir`` into ``results.csv``.

    One row per edit key: a row without error wins over failed attempts, otherwise the first seen.
    Written atomically. ``remove_shards`` deletes the shard files afterwards.
    """
    d = Path(out_dir)
    files = result_files(d)
    if not files:
        raise FileNotFoundError(f"no results.csv or results.shard*.csv in {str(d)!r}")
    target = d / "results.csv"
    _write_atomic(target, unique_rows(read_results(files)))
    if remove_shards:
        for p in files:
            if p != target:
                p.unlink()
    return target
