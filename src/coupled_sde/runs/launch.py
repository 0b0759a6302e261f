"""One shard per process under ``accelerate launch``: dataset runs on all the GPUs of a machine (or several).

Usage (the options are ``coupled-sde run``'s; ``--accelerate`` takes the shard from accelerate)::

    accelerate launch --num_processes 8 -m coupled_sde run --accelerate \\
        --model black-forest-labs/FLUX.1-dev --dataset Data/flowedit.yaml --out runs/flux --metrics ...

Each process takes ``process_index`` / ``num_processes`` from ``accelerate.PartialState`` as its
shard and its device (``cuda:<local rank>``), writes ``results.shard{i}.csv``, waits for the others,
and the main process merges the shards into ``results.csv`` and prints the summary. Interrupted runs
resume with the same command, whatever the number of processes.

On a machine without accelerators the processes run on the CPU (``torch.distributed`` with gloo
only synchronises them): ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2
-m coupled_sde run --accelerate ... --device cpu`` -- ``accelerate launch --cpu`` alone starts a
single process unless MPI is set up.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["partial_state"]


def _accelerator_available() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return bool(accelerator.is_available())
    return torch.cuda.is_available()


def partial_state(device: str | None = None) -> Any:
    """``accelerate.PartialState``, on the CPU when asked (``--device cpu``, ``ACCELERATE_USE_CPU``)
    or when the machine has no accelerator."""
    from coupled_sde._optional import require

    require("accelerate", "diffusers")
    from accelerate import PartialState

    asked_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    cpu = asked_cpu or (device is not None and device.split(":")[0] == "cpu") or not _accelerator_available()
    return PartialState(cpu=cpu)
