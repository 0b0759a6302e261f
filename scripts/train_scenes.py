#!/usr/bin/env python
"""Train the shipped scene model: a conditional rectified flow on 32x32 RGB scenes and its classifier.

Reproduces ``src/coupled_sde/backends/scenes/weights/``::

    textures.pt      the texture bank (scikit-image's brick, grass, gravel, moon at 160x160, uint8)
    flow.pt          EMA weights of SceneFlowNet       ({"config": ..., "state_dict": ...})
    classifier.pt    weights of SceneClassifier        ({"config": ..., "state_dict": ...})
    training.json    seeds, hyper-parameters, wall/CPU times, losses, accuracies

Data (:mod:`coupled_sde.backends.scenes.data`): scenes rendered on the fly, a coloured shape over a
crop of a texture, uniform over the 4 x 4 x 4 attribute combinations. Training crops come from the
texture rows 0..119 only; every evaluation below uses held-out crops (rows 120..159).

Flow: ``x_sigma = (1 - sigma) x0 + sigma eps``, MSE on ``eps - x0``, ``sigma`` logit-normal mixed
with 10% uniform; classifier-free guidance dropout: all three labels null with probability 0.1,
each one alone with probability 0.05. AdamW, warm-up and cosine decay, EMA weights shipped.

Classifier: one CNN with three heads (shape, colour, texture), trained on fresh training scenes,
tested on held-out scenes. It never sees the flow's samples.

Evaluation: 4 guided samples per attribute combination (256 per guidance value) by Euler on the
probability-flow ODE ``dx/dsigma = u_null + w (u_cond - u_null)`` from ``sigma = 1`` to 0, each
attribute classified by the held-out classifier (per-attribute accuracy).

Usage (needs the ``train`` extra: scikit-image)::

    OMP_NUM_THREADS=1 nice -n 10 python scripts/train_scenes.py         # full run, writes the package weights
    python scripts/train_scenes.py --quick --out /tmp/s             # seconds-long smoke run
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
from coupled_sde.backends import scenes as scenes_package
from coupled_sde.backends.base import Condition
from coupled_sde.backends.scenes import data as scene_data
from coupled_sde.backends.scenes.backbone import SceneBackbone
from coupled_sde.backends.scenes.network import ATTRIBUTES, N_VALUES, NULL_LABELS, SceneClassifier, SceneFlowNet
from coupled_sde.editing.members import Members

DEFAULT_OUT = Path(scenes_package.__file__).resolve().parent / "weights"
CLASSIFIER_SEED, FLOW_SEED, EVAL_SEED = 11, 12, 13


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: the package weights dir)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run; do not ship its weights")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--flow-steps", type=int, default=None)
    p.add_argument("--flow-batch", type=int, default=32)
    p.add_argument("--flow-lr", type=float, default=2e-3)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--channels-low", type=int, default=96)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--clf-steps", type=int, default=None)
    p.add_argument("--sample-steps", type=int, default=None, help="Euler steps of the evaluation samples")
    p.add_argument("--per-combo", type=int, default=None, help="evaluation samples per attribute combination")
    return p.parse_args(argv)


def build_textures(out: Path) -> None:
    """The texture bank from scikit-image's data (shipped in its wheel): gray, 160x160, mean 0.5, std 0.2."""
    import skimage.data
    from skimage.transform import resize

    bank = []
    for name in scene_data.TEXTURES:
        im = getattr(skimage.data, name)().astype(np.float64) / 255.0
        im = resize(im, (scene_data.TEXTURE_SIZE,) * 2, anti_aliasing=True)
        im = (im - im.mean()) / im.std() * 0.2 + 0.5
        bank.append(torch.from_numpy(np.clip(im, 0, 1) * 255).round().to(torch.uint8))
    torch.save({"textures": torch.stack(bank), "names": list(scene_data.TEXTURES)}, out / "textures.pt")
    scene_data.load_textures.cache_clear()


def batch_of_scenes(n: int, gen: torch.Generator, split: str = "train") -> tuple[Tensor, Tensor]:
    p = scene_data.sample_params(n, gen, split)
    return scene_data.render(p)[0], p.labels()


def sample_sigma(n: int, gen: torch.Generator) -> Tensor:
    s = torch.sigmoid(torch.randn(n, generator=gen))
    uniform = torch.rand(n, generator=gen) < 0.1
    return torch.where(uniform, torch.rand(n, generator=gen), s)


def _lr_lambda(steps: int):
    warmup = max(1, min(100, steps // 10))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * t))

    return f


def train_classifier(steps: int, seed: int) -> tuple[SceneClassifier, list[float]]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    clf = SceneClassifier(width=16)
    opt = torch.optim.AdamW(clf.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps))
    losses = []
    clf.train()
    for step in range(steps):
        x, y = batch_of_scenes(64, gen)
        x = x + 0.03 * torch.randn(x.shape, generator=gen)  # robustness to the flow's small residual noise
        loss = sum(F.cross_entropy(o, y[:, k], label_smoothing=0.05) for k, o in enumerate(clf(x)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            print(f"classifier step {step + 1}/{steps}  loss {np.mean(losses[-100:]):.4f}", flush=True)
    return clf.eval(), losses


@torch.no_grad()
def classifier_accuracy(clf: SceneClassifier, x: Tensor, y: Tensor) -> list[float]:
    pred = [o.argmax(1) for o in clf(x)]
    return [float((p == y[:, k]).float().mean()) for k, p in enumerate(pred)]


def train_flow(args: argparse.Namespace, steps: int, seed: int) -> tuple[SceneFlowNet, list[float]]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = SceneFlowNet(channels=args.channels, channels_low=args.channels_low)
    ema = SceneFlowNet(channels=args.channels, channels_low=args.channels_low)
    ema.load_state_dict(net.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=args.flow_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps))
    null = torch.tensor(NULL_LABELS)
    log_every = max(1, steps // 50)
    losses: list[float] = []
    running, count, t0 = 0.0, 0, time.perf_counter()
    net.train()
    for step in range(steps):
        b = args.flow_batch
        x0, labels = batch_of_scenes(b, gen)
        drop_all = torch.rand(b, generator=gen) < 0.1
        drop_one = torch.rand((b, 3), generator=gen) < 0.05
        labels = torch.where(drop_all[:, None] | drop_one, null.expand(b, 3), labels)
        sigma = sample_sigma(b, gen)
        eps = torch.randn(x0.shape, generator=gen)
        s = sigma[:, None, None, None]
        loss = F.mse_loss(net((1 - s) * x0 + s * eps, sigma, labels), eps - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        d = min(args.ema, (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.lerp_(p, 1.0 - d)
        running += loss.item()
        count += 1
        if (step + 1) % log_every == 0 or step + 1 == steps:
            losses.append(running / count)
            print(f"flow step {step + 1}/{steps}  loss {running / count:.4f}  {time.perf_counter() - t0:.0f}s", flush=True)
            running, count = 0.0, 0
    return ema.eval(), losses


@torch.no_grad()
def euler_sample(net: SceneFlowNet, labels: Tensor, w: float, steps: int, gen: torch.Generator) -> Tensor:
    """Guided probability-flow ODE ``dx/dsigma = u_null + w (u_c - u_null)``, Euler on a uniform grid
    sigma 1 -> 0, solved by :func:`coupled_sde.solve` on the scene backbone's members (``eta = 0``),
    clamped to [-1, 1]."""
    backbone = SceneBackbone(net, default_guidance=w)
    members = Members(backbone, backbone.encode_conditions([Condition([tuple(r) for r in labels.tolist()], w)]), 1, eta=0.0)
    x = torch.randn((labels.shape[0], 3, scene_data.SIZE, scene_data.SIZE), generator=gen)
    return solve(members, x.unsqueeze(0), TimeGrid.uniform(1.0, 0.0, steps), "euler").y[0].clamp(-1.0, 1.0)


def all_combos(per_combo: int) -> Tensor:
    grid = torch.cartesian_prod(*(torch.arange(k) for k in N_VALUES))
    return grid.repeat_interleave(per_combo, 0)


@torch.no_grad()
def sample_accuracy(net: SceneFlowNet, clf: SceneClassifier, w: float, steps: int, per_combo: int, seed: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    labels = all_combos(per_combo)
    samples = torch.cat([euler_sample(net, labels[i : i + 128], w, steps, gen) for i in range(0, len(labels), 128)])
    acc = classifier_accuracy(clf, samples, labels)
    pred = torch.stack([o.argmax(1) for o in clf(samples)], 1)
    all_ok = float((pred == labels).all(1).float().mean())
    return {"per_attribute": dict(zip(ATTRIBUTES, acc)), "all_three": all_ok, "n": len(labels)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    quick = args.quick
    flow_steps = args.flow_steps if args.flow_steps is not None else (30 if quick else 1200)
    clf_steps = args.clf_steps if args.clf_steps is not None else (20 if quick else 300)
    sample_steps = args.sample_steps if args.sample_steps is not None else (4 if quick else 20)
    per_combo = args.per_combo if args.per_combo is not None else (1 if quick else 4)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t_start, cpu_start = time.perf_counter(), time.process_time()

    # Scenes are rendered from the package's bank; the one written here is byte-identical when built
    # from the same scikit-image data (checked below), so a run into another folder trains the same way.
    build_textures(out)
    written = torch.load(out / "textures.pt", weights_only=True)["textures"].float() / 255.0
    if not torch.equal(written, scene_data.load_textures()):
        raise SystemExit(f"{out / 'textures.pt'} differs from the package's texture bank: copy it into {DEFAULT_OUT}")

    t0 = time.perf_counter()
    clf, clf_losses = train_classifier(clf_steps, CLASSIFIER_SEED)
    clf_time = time.perf_counter() - t0
    xh, yh = batch_of_scenes(2048, torch.Generator().manual_seed(EVAL_SEED), "heldout")
    clf_acc = classifier_accuracy(clf, xh, yh)
    print(f"classifier: {clf_time:.0f}s  held-out accuracy {dict(zip(ATTRIBUTES, clf_acc))}", flush=True)

    t0 = time.perf_counter()
    net, flow_losses = train_flow(args, flow_steps, FLOW_SEED)
    flow_time = time.perf_counter() - t0

    t0 = time.perf_counter()
    by_guidance = {}
    for w in (1.0, 2.0, 3.0):
        by_guidance[str(w)] = sample_accuracy(net, clf, w, sample_steps, per_combo, EVAL_SEED)
        print(f"guided samples w={w}: {by_guidance[str(w)]}", flush=True)
    eval_time = time.perf_counter() - t0

    torch.save({"config": net.config, "state_dict": net.state_dict()}, out / "flow.pt")
    torch.save({"config": clf.config, "state_dict": clf.state_dict()}, out / "classifier.pt")
    meta: dict[str, Any] = {
        "quick": quick,
        "data": {
            "shapes": list(scene_data.SHAPES),
            "colours": list(scene_data.COLOURS),
            "textures": list(scene_data.TEXTURES),
            "texture_source": "skimage.data (brick, grass, gravel, moon), resized to 160x160, mean 0.5 std 0.2",
            "train_rows": list(scene_data.TRAIN_ROWS),
            "heldout_rows": list(scene_data.HELDOUT_ROWS),
            "image": "32x32 RGB in [-1, 1]",
        },
        "seeds": {"classifier": CLASSIFIER_SEED, "flow": FLOW_SEED, "eval": EVAL_SEED},
        "classifier": {
            "config": clf.config,
            "params": sum(p.numel() for p in clf.parameters()),
            "steps": clf_steps,
            "batch": 64,
            "heldout_accuracy": dict(zip(ATTRIBUTES, clf_acc)),
            "n_heldout": int(len(yh)),
            "final_loss": float(np.mean(clf_losses[-20:])),
            "wall_time_s": clf_time,
        },
        "flow": {
            "config": net.config,
            "params": sum(p.numel() for p in net.parameters()),
            "steps": flow_steps,
            "batch": args.flow_batch,
            "optimizer": f"AdamW lr {args.flow_lr} (warmup + cosine to 5%), grad clip 1.0",
            "ema_decay": args.ema,
            "sigma_distribution": "sigmoid(N(0,1)) with 10% uniform[0,1]",
            "cfg_dropout": "all labels null p=0.1, each label alone p=0.05",
            "loss_curve": flow_losses,
            "wall_time_s": flow_time,
        },
        "sampling": {
            "method": "Euler on dx/dsigma = u_null + w (u_cond - u_null), uniform grid 1 -> 0, clamp [-1, 1]",
            "steps": sample_steps,
            "per_combination": per_combo,
            "accuracy_by_guidance": by_guidance,
            "wall_time_s": eval_time,
        },
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": args.threads,
            "machine": platform.machine(),
        },
        "wall_time_s": time.perf_counter() - t_start,
        "cpu_time_s": time.process_time() - cpu_start,
    }
    (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"total {meta['wall_time_s']:.0f}s wall, {meta['cpu_time_s']:.0f}s CPU -> {out}", flush=True)
    return meta


if __name__ == "__main__":
    main()
