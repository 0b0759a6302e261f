"""Dataset runs: edit many (image, source prompt, target prompt) triplets, resumably, with metrics.

* :func:`load_triplets` -- our JSON/YAML format or FlowEdit's ``edits.yaml``.
* :func:`load_settings` -- settings lists, grids, per method.
* :func:`run_dataset` -- every triplet x method x setting x seed; one CSV row per edit, appended
  and flushed, so an interrupted run resumes where it stopped; shards for scale-out.
* :func:`merge_results`, :func:`summarize`, :func:`plot_frontier` -- after the run.
* :mod:`coupled_sde.runs.launch` -- ``accelerate launch -m coupled_sde run --accelerate ...``: one shard per GPU.
"""

from .pie_bench import decode_rle_mask, evaluate_pie_bench, parse_pie_bench
from .results import (
    COLUMNS,
    METRIC_COLUMNS,
    FolderLock,
    ResultsWriter,
    RunLockedError,
    clean_stale_tmp,
    compact_results,
    done_keys,
    merge_results,
    read_results,
    read_run,
    result_files,
    results_path,
    unique_rows,
)
from .runner import Job, RunReport, build_metrics, plan, run_dataset
from .settings import expand, load_settings, settings_key, settings_slug
from .summary import Table, plot_frontier, summarize, summarize_pie_bench
from .triplets import Triplet, load_triplets, parse_triplets

__all__ = [
    "COLUMNS",
    "METRIC_COLUMNS",
    "FolderLock",
    "Job",
    "ResultsWriter",
    "RunLockedError",
    "RunReport",
    "Table",
    "Triplet",
    "build_metrics",
    "clean_stale_tmp",
    "compact_results",
    "done_keys",
    "expand",
    "load_settings",
    "load_triplets",
    "merge_results",
    "parse_triplets",
    "plan",
    "plot_frontier",
    "read_results",
    "read_run",
    "result_files",
    "results_path",
    "run_dataset",
    "settings_key",
    "settings_slug",
    "summarize",
    "summarize_pie_bench",
    "unique_rows",
    "decode_rle_mask",
    "evaluate_pie_bench",
    "parse_pie_bench",
]
