#!/usr/bin/env python
"""Train the shipped 8x8 digits models: a class-conditional rectified flow and a classifier.

Reproduces ``src/coupled_sde/backends/digits/weights/``::

    flow.pt          EMA weights of DigitsFlowNet  ({"config": ..., "state_dict": ...})
    classifier.pt    weights of DigitsClassifier   ({"config": ..., "state_dict": ...})
    heldout.pt       the test split                ({"images": uint8 (N,8,8), "labels": long (N,)})
    training.json    seeds, hyper-parameters, wall times, losses, accuracies

Data: scikit-learn's ``load_digits()``, split 80/20 stratified with ``random_state=SPLIT_SEED``;
both networks see the training split only. Pixels are scaled by ``x = pixels / 8 - 1``.

Flow training: ``x_sigma = (1 - sigma) x0 + sigma eps``, the network regresses ``eps - x0`` (MSE).
``sigma`` is drawn from a logit-normal(0, 1) mixed with 10% uniform (the logit-normal of SD3
concentrates the training signal at intermediate noise levels where the velocity is hardest to
predict; the uniform share keeps the ends of [0, 1] covered for the Euler grid). Labels are
replaced by the null class 10 with probability 0.15 (classifier-free guidance). AdamW with warmup
and cosine decay; the shipped weights are an exponential moving average.

Evaluation: for every class, samples are drawn by integrating the probability-flow ODE
``dx/dsigma = u_null + w (u_class - u_null)`` with Euler on a uniform grid from ``sigma = 1``
(pure N(0, I) noise) to ``sigma = 0``, clamped to [-1, 1], and classified by the trained
classifier.

Usage::

    python scripts/train_digits.py                 # full run (CPU, a few minutes), writes the package weights
    python scripts/train_digits.py --quick --out /tmp/d   # seconds-long smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coupled_sde import TimeGrid, solve
from coupled_sde.backends import digits as digits_package
from coupled_sde.backends.base import Condition
from coupled_sde.backends.digits.backbone import DigitsBackbone
from coupled_sde.backends.digits.network import (
    NULL_CLASS,
    NUM_CLASSES,
    DigitsClassifier,
    DigitsFlowNet,
    pixels_to_model,
)
from coupled_sde.editing.members import Members

#: The shipped weights' folder, inside the installed package.
DEFAULT_OUT = Path(digits_package.__file__).parent / "weights"
SPLIT_SEED = 0
CLASSIFIER_SEED = 1
FLOW_SEED = 2
EVAL_SEED = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: the package weights dir)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (a few seconds); do not use its weights")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--flow-steps", type=int, default=None, help="flow optimisation steps")
    p.add_argument("--flow-batch", type=int, default=128)
    p.add_argument("--flow-lr", type=float, default=2e-3)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--clf-epochs", type=int, default=None, help="classifier epochs")
    p.add_argument("--guidance", type=float, default=None, help="guidance w for the reported sample accuracy")
    p.add_argument("--extra-guidance", type=float, nargs="*", default=None, help="further w values to report")
    p.add_argument("--sample-steps", type=int, default=None, help="Euler steps for the evaluation")
    p.add_argument("--samples-per-class", type=int, default=None)
    p.add_argument("--extra-steps", type=int, nargs="*", default=None, help="further Euler step counts to report")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# data


def load_split() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Stratified 80/20 split of sklearn digits: uint8 images (N, 8, 8) and long labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.uint8)  # values 0..16
    labels = digits.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(images, labels, test_size=0.2, stratify=labels, random_state=SPLIT_SEED)
    return torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte), torch.from_numpy(yte)


def random_shift(x: Tensor, gen: torch.Generator, max_shift: int = 1) -> Tensor:
    """Shift each image by up to ``max_shift`` pixels in x and y, padding with background (-1)."""
    n = x.shape[0]
    size = x.shape[-1]
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    ar = torch.arange(size)
    rows = (dy[:, None] + ar[None, :])[:, None, :, None].expand(n, 1, size, size + 2 * max_shift)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + ar[None, :])[:, None, None, :].expand(n, 1, size, size)
    return out.gather(3, cols)


# ----------------------------------------------------------------------------------------------
# classifier


@torch.no_grad()
def accuracy(clf: nn.Module, x: Tensor, y: Tensor, batch: int = 1000) -> float:
    clf.eval()
    correct = 0
    for i in range(0, x.shape[0], batch):
        correct += int((clf(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
    return correct / max(1, x.shape[0])


def train_classifier(x: Tensor, y: Tensor, epochs: int, seed: int) -> tuple[DigitsClassifier, list[float]]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    clf = DigitsClassifier()
    batch = 64
    steps_per_epoch = math.ceil(x.shape[0] / batch)
    total = max(1, epochs * steps_per_epoch)
    opt = torch.optim.AdamW(clf.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=total, pct_start=0.15)
    losses: list[float] = []
    for _ in range(epochs):
        clf.train()
        perm = torch.randperm(x.shape[0], generator=gen)
        running, count = 0.0, 0
        for i in range(0, x.shape[0], batch):
            idx = perm[i : i + batch]
            xb = random_shift(x[idx], gen)
            loss = F.cross_entropy(clf(xb), y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item() * idx.numel()
            count += idx.numel()
        losses.append(running / count)
    return clf.eval(), losses


# ----------------------------------------------------------------------------------------------
# flow


def sample_sigma(n: int, gen: torch.Generator) -> Tensor:
    """Logit-normal(0, 1) noise levels, 10% of them uniform on [0, 1]."""
    s = torch.sigmoid(torch.randn(n, generator=gen))
    u = torch.rand(n, generator=gen)
    mix = torch.rand(n, generator=gen) < 0.1
    return torch.where(mix, u, s)


def train_flow(
    x: Tensor, y: Tensor, steps: int, batch: int, lr: float, channels: int, blocks: int, ema_decay: float, seed: int
) -> tuple[DigitsFlowNet, list[float]]:
    """Train the velocity network; returns the EMA network and the loss per 1% of training."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = DigitsFlowNet(channels=channels, num_blocks=blocks)
    ema = DigitsFlowNet(channels=channels, num_blocks=blocks)
    ema.load_state_dict(net.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, min(200, steps // 10))

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    n = x.shape[0]
    log_every = max(1, steps // 100)
    losses: list[float] = []
    running, count = 0.0, 0
    net.train()
    for step in range(steps):
        idx = torch.randint(0, n, (batch,), generator=gen)
        x0 = x[idx]
        label = y[idx].clone()
        label[torch.rand(batch, generator=gen) < 0.15] = NULL_CLASS
        sigma = sample_sigma(batch, gen)
        eps = torch.randn(x0.shape, generator=gen)
        s = sigma[:, None, None, None]
        xs = (1.0 - s) * x0 + s * eps
        loss = F.mse_loss(net(xs, sigma, label), eps - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        # EMA with a warm-up so that short runs still give a usable average.
        d = min(ema_decay, (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.lerp_(p, 1.0 - d)
            for be, b in zip(ema.buffers(), net.buffers()):
                be.copy_(b)
        running += loss.item()
        count += 1
        if (step + 1) % log_every == 0 or step + 1 == steps:
            losses.append(running / count)
            running, count = 0.0, 0
    return ema.eval(), losses


@torch.no_grad()
def eval_flow_loss(net: DigitsFlowNet, x: Tensor, y: Tensor, seed: int, repeats: int = 4) -> float:
    """Conditional MSE of ``eps - x0`` on ``(x, y)`` with the training sigma distribution."""
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for _ in range(repeats):
        sigma = sample_sigma(x.shape[0], gen)
        eps = torch.randn(x.shape, generator=gen)
        s = sigma[:, None, None, None]
        xs = (1.0 - s) * x + s * eps
        total += float(F.mse_loss(net(xs, sigma, y), eps - x, reduction="sum"))
        count += x.numel()
    return total / count


@torch.no_grad()
def euler_sample(net: DigitsFlowNet, labels: Tensor, w: float, steps: int, gen: torch.Generator) -> Tensor:
    """Guided probability-flow ODE ``dx/dsigma = u_null + w (u_c - u_null)``, Euler, sigma 1 -> 0,
    solved by :func:`coupled_sde.solve` on the digits backbone's members (``eta = 0``)."""
    backbone = DigitsBackbone(net, default_guidance=w, device=next(net.parameters()).device)
    members = Members(backbone, backbone.encode_conditions([Condition(tuple(labels.tolist()), w)]), 1, eta=0.0)
    x = torch.randn((labels.shape[0], 1, 8, 8), generator=gen)
    return solve(members, x.unsqueeze(0), TimeGrid.uniform(1.0, 0.0, steps), "euler").y[0].clamp(-1.0, 1.0)


@torch.no_grad()
def sample_accuracy(
    net: DigitsFlowNet, clf: nn.Module, w: float, steps: int, per_class: int, seed: int
) -> tuple[float, list[float], Tensor]:
    """Fraction of generated samples recognised as their class (overall, per class), and the samples."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(per_class)
    samples = torch.cat([euler_sample(net, labels[i : i + 500], w, steps, gen) for i in range(0, labels.shape[0], 500)])
    ok = clf(samples).argmax(1) == labels
    per = [float(ok[labels == c].float().mean()) for c in range(NUM_CLASSES)]
    return float(ok.float().mean()), per, samples


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    quick = args.quick
    flow_steps = args.flow_steps if args.flow_steps is not None else (20 if quick else 3000)
    clf_epochs = args.clf_epochs if args.clf_epochs is not None else (1 if quick else 40)
    guidance = args.guidance if args.guidance is not None else 3.0
    extra = args.extra_guidance if args.extra_guidance is not None else ([] if quick else [2.0])
    extra_steps = args.extra_steps if args.extra_steps is not None else ([] if quick else [10, 20])
    sample_steps = args.sample_steps if args.sample_steps is not None else (4 if quick else 40)
    per_class = args.samples_per_class if args.samples_per_class is not None else (2 if quick else 100)

    t_start = time.perf_counter()
    cpu_start = time.process_time()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    xtr_u8, ytr, xte_u8, yte = load_split()
    xtr, xte = pixels_to_model(xtr_u8), pixels_to_model(xte_u8)
    print(f"train {tuple(xtr.shape)}  test {tuple(xte.shape)}", flush=True)

    t0 = time.perf_counter()
    clf, clf_losses = train_classifier(xtr, ytr, clf_epochs, CLASSIFIER_SEED)
    clf_time = time.perf_counter() - t0
    clf_train_acc = accuracy(clf, xtr, ytr)
    clf_test_acc = accuracy(clf, xte, yte)
    print(f"classifier: {clf_time:.1f}s  train acc {clf_train_acc:.4f}  test acc {clf_test_acc:.4f}", flush=True)

    t0 = time.perf_counter()
    net, flow_losses = train_flow(
        xtr, ytr, flow_steps, args.flow_batch, args.flow_lr, args.channels, args.blocks, args.ema, FLOW_SEED
    )
    flow_time = time.perf_counter() - t0
    n_params = sum(p.numel() for p in net.parameters())
    flow_train_loss = eval_flow_loss(net, xtr, ytr, EVAL_SEED)
    flow_test_loss = eval_flow_loss(net, xte, yte, EVAL_SEED)
    print(
        f"flow: {flow_time:.1f}s  {n_params} params  final train loss {flow_losses[-1]:.4f}  "
        f"EMA loss train {flow_train_loss:.4f} test {flow_test_loss:.4f}",
        flush=True,
    )

    t0 = time.perf_counter()
    sample_acc: dict[str, Any] = {}
    samples = torch.empty(0)
    for w in [guidance, 1.0, *extra]:
        if str(w) in sample_acc:
            continue
        acc, per, s = sample_accuracy(net, clf, w, sample_steps, per_class, EVAL_SEED)
        if w == guidance:
            samples = s
        sample_acc[str(w)] = {"accuracy": acc, "per_class": per}
        print(f"samples w={w}: accuracy {acc:.4f}  per class {[round(a, 2) for a in per]}", flush=True)
    by_steps: dict[str, float] = {}
    for k in extra_steps:
        acc, _, _ = sample_accuracy(net, clf, guidance, k, per_class, EVAL_SEED)
        by_steps[str(k)] = acc
        print(f"samples w={guidance} with {k} Euler steps: accuracy {acc:.4f}", flush=True)
    # Memorisation check: distance of samples to their nearest training digit, compared with the
    # same distance for the held-out digits (samples copying the training set would be much closer).
    nn_sample = float(torch.cdist(samples.flatten(1), xtr.flatten(1)).min(1).values.mean())
    nn_heldout = float(torch.cdist(xte.flatten(1), xtr.flatten(1)).min(1).values.mean())
    print(f"mean L2 to nearest training digit: samples {nn_sample:.3f}  held-out {nn_heldout:.3f}", flush=True)
    eval_time = time.perf_counter() - t0

    torch.save({"config": net.config, "state_dict": net.state_dict()}, out / "flow.pt")
    torch.save({"config": clf.config, "state_dict": clf.state_dict()}, out / "classifier.pt")
    torch.save({"images": xte_u8.contiguous(), "labels": yte.contiguous()}, out / "heldout.pt")

    wall = time.perf_counter() - t_start
    cpu = time.process_time() - cpu_start
    meta: dict[str, Any] = {
        "quick": quick,
        "data": {
            "source": "sklearn.datasets.load_digits",
            "scaling": "x = pixels / 8 - 1",
            "split": "train_test_split(test_size=0.2, stratify=labels)",
            "split_seed": SPLIT_SEED,
            "n_train": int(xtr.shape[0]),
            "n_test": int(xte.shape[0]),
        },
        "seeds": {"split": SPLIT_SEED, "classifier": CLASSIFIER_SEED, "flow": FLOW_SEED, "eval": EVAL_SEED},
        "classifier": {
            "config": clf.config,
            "params": sum(p.numel() for p in clf.parameters()),
            "epochs": clf_epochs,
            "batch": 64,
            "optimizer": "AdamW lr 3e-3 (one-cycle) wd 1e-4, label smoothing 0.05, random +-1 px shifts",
            "final_train_loss": clf_losses[-1],
            "train_accuracy": clf_train_acc,
            "test_accuracy": clf_test_acc,
            "wall_time_s": clf_time,
        },
        "flow": {
            "config": net.config,
            "params": n_params,
            "steps": flow_steps,
            "batch": args.flow_batch,
            "epochs": flow_steps * args.flow_batch / xtr.shape[0],
            "optimizer": f"AdamW lr {args.flow_lr} (warmup + cosine to 5%), grad clip 1.0",
            "ema_decay": args.ema,
            "sigma_distribution": "sigmoid(N(0,1)) (logit-normal) with 10% uniform[0,1]",
            "cfg_label_dropout": 0.15,
            "final_train_loss": flow_losses[-1],
            "ema_loss_train": flow_train_loss,
            "ema_loss_test": flow_test_loss,
            "loss_curve": flow_losses,
            "wall_time_s": flow_time,
        },
        "sampling": {
            "method": "Euler on dx/dsigma = u_null + w (u_class - u_null), uniform grid sigma 1 -> 0, clamp [-1, 1]",
            "steps": sample_steps,
            "samples_per_class": per_class,
            "recommended_guidance": guidance,
            "accuracy_at_recommended_guidance": sample_acc[str(guidance)]["accuracy"],
            "accuracy_at_w1": sample_acc[str(1.0)]["accuracy"],
            "by_guidance": sample_acc,
            "accuracy_at_recommended_guidance_by_steps": by_steps,
            "mean_l2_to_nearest_train_digit": {"samples": nn_sample, "heldout": nn_heldout},
            "wall_time_s": eval_time,
        },
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": args.threads,
            "machine": platform.machine(),
        },
        "wall_time_s": wall,
        # CPU time of this process (all threads); with `threads` threads on an otherwise idle machine
        # the wall time is roughly cpu_time_s / threads. Wall times grow under CPU contention.
        "cpu_time_s": cpu,
    }
    (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"total wall time {wall:.1f}s -> {out}", flush=True)
    return meta


if __name__ == "__main__":
    main()
