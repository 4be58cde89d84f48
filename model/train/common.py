"""What the three training stages share: config, seeding, data order, the loop, resumption.

Runs are resumable: every ``save_every`` steps the trainable parts, the
optimiser, the LR schedule and the step count go to ``<out>.state.pt``; a
rerun with the same arguments continues from there with the same data
order (batches are a pure function of (seed, epoch)), so an interrupted
multi-hour run loses at most ``save_every`` steps.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from model.data.augment import NOISE_KINDS
from model.data.dataset import WindowDataset, collate_windows, wav_duration
from model.data.manifest import ManifestEntry
from model.features import length_mask
from model.inference import resolve_device
from model.progress import ProgressBar

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    manifest: str
    out: str
    init: str | None = None  # previous stage's checkpoint
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 5.0
    save_every: int = 200
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    # threads that fetch each batch when there are no loader processes (0: as many as torch computes with;
    # 1: one by one). The batches are the same bit for bit whatever the count.
    fetch_threads: int = 0
    window_s: float = 5.0
    augment: bool = True
    resume: bool = True
    progress: bool = True
    bf16: bool = False  # autocast on CUDA
    stop_at: int | None = None  # end this run early at that step (state saved; rerun to continue)
    # wall-clock budget of the training loop: the step count is cut to what the measured rate fits
    # (before the warm-up ends, so the cosine schedule decays fully), and the loop stops at the budget
    time_budget_s: float | None = None
    # exponential moving average of the trained weights (0: off): the run ends with the average, which
    # leans less on where the last few hundred noisy steps left the weights
    ema: float = 0.0
    # the additive noises augmentation draws from, uniformly; a kind listed twice is drawn twice as often
    noise_kinds: tuple[str, ...] = NOISE_KINDS
    extra: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def state_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".state.pt")


def metrics_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".metrics.json")


def entry_duration(entry: ManifestEntry) -> float:
    if entry.end_s is not None:
        return entry.end_s - (entry.start_s or 0.0)
    return wav_duration(entry.audio) - (entry.start_s or 0.0)


def epoch_batches(order: Callable[[int], Sequence[int]], batch_size: int, start_step: int) -> Iterator[tuple[int, list[list[int]]]]:
    """Yield (epoch, batches of item indices) forever, skipping the first ``start_step`` batches.

    ``order(epoch)`` must be deterministic; incomplete last batches are dropped so
    every step sees ``batch_size`` items.
    """
    skip = start_step
    epoch = 0
    while True:
        idx = list(order(epoch))
        batches = [idx[i:i + batch_size] for i in range(0, len(idx) - batch_size + 1, batch_size)]
        if not batches:
            raise ValueError(f"fewer than batch_size={batch_size} training items")
        if skip >= len(batches):
            skip -= len(batches)
        else:
            yield epoch, batches[skip:]
            skip = 0
        epoch += 1


def batch_stream(dataset: WindowDataset, order: Callable[[int], Sequence[int]], tc: TrainConfig,
                 start_step: int) -> Iterator[dict[str, Any]]:
    """Batches of ``dataset`` items in ``order``, epoch after epoch, from ``start_step`` on.

    One loader for the whole run: its worker processes (and their audio caches) live
    across epochs instead of starting cold every epoch, which with large batches on a
    GPU is every few dozen steps. Items are addressed as (epoch, item), so each worker
    draws the crops and augmentations of the right epoch.
    """
    def keyed_batches() -> Iterator[list[tuple[int, int]]]:
        for epoch, batches in epoch_batches(order, tc.batch_size, start_step):
            for batch in batches:
                yield [(epoch, i) for i in batch]

    # Without worker processes the batch is fetched while the model waits: fetch it with as many threads
    # as torch computes with (the same windows bit for bit; WindowDataset.fetch_threads). With workers,
    # they fetch ahead beside the model, and threads in each would only crowd the cores.
    dataset.fetch_threads = (tc.fetch_threads or torch.get_num_threads()) if tc.num_workers == 0 else 1
    # own generator: creating a loader must not draw from the global RNG, which the
    # resumable state restores (masking and SpecAugment draw from it)
    loader = DataLoader(dataset, batch_sampler=keyed_batches(), collate_fn=getattr(dataset, "collate", collate_windows),
                        num_workers=tc.num_workers, generator=torch.Generator().manual_seed(tc.seed),
                        prefetch_factor=4 if tc.num_workers else None)
    yield from loader


def shuffled_order(n: int, seed: int) -> Callable[[int], list[int]]:
    def order(epoch: int) -> list[int]:
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    return order


def make_optimizer(params, tc: TrainConfig):
    opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)

    def schedule(step: int) -> float:  # linear warm-up, cosine decay to 5 %
        if step < tc.warmup:
            return (step + 1) / max(1, tc.warmup)
        progress = (step - tc.warmup) / max(1, tc.steps - tc.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def train_loop(*, desc: str, tc: TrainConfig, trainable: dict[str, nn.Module],
               step_fn: Callable[[dict[str, Any]], dict[str, torch.Tensor]],
               batches: Callable[[int], Iterator[dict[str, Any]]], device: torch.device,
               clip_groups: list[list[nn.Parameter]] | None = None) -> list[dict[str, float]]:
    """Optimise ``trainable`` with ``step_fn(batch) -> {"loss": ..., other metrics}``.

    Gradients are clipped to ``tc.grad_clip`` over all parameters together, or over each of
    ``clip_groups`` on its own (parts that are trained side by side but are independent models).

    Returns the per-step metric history (including steps from before a resume).
    """
    params = [p for m in trainable.values() for p in m.parameters() if p.requires_grad]
    opt, sched = make_optimizer(params, tc)
    history: list[dict[str, float]] = []
    start = 0
    sp = state_path(tc.out)
    ema = WeightAverage(trainable, tc.ema) if tc.ema else None
    if tc.resume and sp.exists():
        st = torch.load(sp, map_location="cpu", weights_only=True)
        for name, m in trainable.items():
            m.load_state_dict(st["modules"][name])
        if ema is not None:
            if "ema" not in st:
                raise ValueError(f"{sp} was saved without --ema: resume it without, or start over (--no-resume)")
            ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        torch.set_rng_state(st["rng"])
        history = list(st["history"])
        start = int(st["step"])
        log.info("%s: resuming from step %d (%s)", desc, start, sp)

    def save_state(step: int) -> None:
        st = {"step": step, "modules": {k: m.state_dict() for k, m in trainable.items()},
              "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
              "rng": torch.get_rng_state(), "history": history, "train_config": json.dumps(asdict(tc))}
        if ema is not None:
            st["ema"] = ema.state_dict()
        sp.parent.mkdir(parents=True, exist_ok=True)
        tmp = sp.with_name(sp.name + ".tmp")
        torch.save(st, tmp)
        tmp.replace(sp)

    for m in trainable.values():
        m.train()
    use_bf16 = tc.bf16 and device.type == "cuda"
    it = batches(start)
    t0 = time.time()
    budget = StepBudget(tc, start, t0) if tc.time_budget_s else None
    with ProgressBar(desc, tc.steps, tc.progress, completed=start, emit=log.info) as bar:
        end = tc.steps if tc.stop_at is None else min(tc.steps, tc.stop_at)
        step = start
        while step < end:
            if budget is not None:
                fitted = budget.fit(step, time.time())
                if fitted is not None:
                    log.info("%s: time budget %.0f s fits %d steps (was %d)", desc, tc.time_budget_s, fitted, tc.steps)
                    tc.steps = fitted  # the schedule reads it: the cosine now ends at the fitted step
                    end = min(end, fitted)
                    bar.update(total=fitted)
                if budget.spent(time.time()):
                    log.warning("%s: time budget spent at step %d of %d, before the schedule's end; the state "
                                "is saved: the same command with --steps %d and no --max-minutes finishes this "
                                "schedule", desc, step, end, end)
                    end = step
                    break
            batch = next(it)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                out = step_fn(batch)
            loss = out["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: non-finite loss at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip_groups is None:
                gnorm = nn.utils.clip_grad_norm_(params, tc.grad_clip)
            else:
                gnorm = torch.stack([nn.utils.clip_grad_norm_(g, tc.grad_clip) for g in clip_groups]).norm()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(step)
            rec = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in out.items()}
            rec["grad_norm"] = float(gnorm)
            rec["lr"] = sched.get_last_lr()[0]
            history.append(rec)
            if (step + 1) % tc.log_every == 0 or step + 1 == end:
                recent = history[-tc.log_every:]
                info = " ".join(f"{k}={_mean([r[k] for r in recent]) or 0.0:.3f}" for k in out)
                bar.update(info=info)
            bar.advance()
            if tc.save_every and (step + 1) % tc.save_every == 0 and step + 1 < end:
                save_state(step + 1)
            step += 1
    save_state(max(start, end))
    if ema is not None:
        ema.copy_to_modules()
        log.info("%s: the weights are now the moving average (decay %g)", desc, tc.ema)
    log.info("%s: steps %d..%d of %d in %.1f s", desc, start, end, tc.steps, time.time() - t0)
    return history


class WeightAverage:
    """An exponential moving average of modules' float weights and buffers.

    The decay ramps up as (1 + step) / (10 + step) until it reaches ``decay``, so
    the average is not dominated by the starting weights in a short run."""

    def __init__(self, modules: dict[str, nn.Module], decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema must be in (0, 1), got {decay}")
        self.modules, self.decay = modules, decay
        # state_dict's tensors share storage with the live weights (which the optimiser and a resume
        # update in place), so they are looked up once here rather than on every step
        self.live = {name: {k: v for k, v in m.state_dict().items() if v.is_floating_point()}
                     for name, m in modules.items()}
        self.shadow = {name: {k: v.clone() for k, v in live.items()} for name, live in self.live.items()}

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for name, shadow in self.shadow.items():
            live = self.live[name]
            for k, v in shadow.items():
                v.lerp_(live[k], 1.0 - d)

    def state_dict(self) -> dict:
        return {name: {k: v.cpu() for k, v in sh.items()} for name, sh in self.shadow.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, sh in self.shadow.items():
            for k, v in sh.items():
                v.copy_(state[name][k])

    def copy_to_modules(self) -> None:
        for name, m in self.modules.items():
            m.load_state_dict(self.shadow[name], strict=False)


class StepBudget:
    """Turns a wall-clock budget into a step count: the rate is measured over steps that are
    past the cold start (data-loader workers filling their caches) and still inside the
    warm-up, where the learning rate does not depend on the total yet."""

    def __init__(self, tc: TrainConfig, start: int, t0: float, skip: int = 30, measure: int = 60):
        self.tc, self.t0 = tc, t0
        self.a, self.b = start + skip, start + skip + measure
        self.t_a: float | None = None
        self.done = False

    def fit(self, step: int, now: float) -> int | None:
        """The fitted total step count, once, at the end of the measuring steps."""
        if self.done:
            return None
        if step == self.a:
            self.t_a = now
        if step < self.b or self.t_a is None:
            return None
        self.done = True
        rate = (self.b - self.a) / max(now - self.t_a, 1e-6)
        fitted = step + int(rate * max(0.0, self.tc.time_budget_s - (now - self.t0)))
        return max(step + 1, min(self.tc.steps, fitted))

    def spent(self, now: float) -> bool:
        return now - self.t0 >= self.tc.time_budget_s


def _mean(values: list[float]) -> float | None:
    """Mean ignoring NaN (a batch without labelled items has no accuracy); None if all NaN."""
    v = [x for x in values if not math.isnan(x)]
    return float(np.mean(v)) if v else None


def summarize(history: list[dict[str, float]], window: int = 10) -> dict[str, Any]:
    """First/last averaged metrics (what the smoke test and reports look at) + the loss curve."""
    if not history:
        return {}
    w = max(1, min(window, len(history) // 2 or 1))
    keys = history[0].keys()
    return {
        "steps": len(history),
        "first": {k: _mean([h[k] for h in history[:w]]) for k in keys},
        "last": {k: _mean([h[k] for h in history[-w:]]) for k in keys},
        "loss_curve": [round(h["loss"], 5) for h in history],
    }


#: the run settings that change a stage's weights but are not part of the model's config: kept in the
#: checkpoint's metrics, so a checkpoint says how it was trained (the recipe test compares them)
RUN_SETTINGS = ("seed", "lr", "batch_size", "warmup", "window_s", "ema")


def stage_metrics(summary: dict[str, Any], tc: TrainConfig, **extra: Any) -> dict[str, Any]:
    """A stage's entry in the checkpoint's metrics: the run's summary (without the loss curve), its
    settings and whatever the stage adds."""
    run = {k: getattr(tc, k) for k in RUN_SETTINGS}
    return {k: v for k, v in summary.items() if k != "loss_curve"} | {"run": run} | extra


def write_metrics(out: str | Path, stage: str, summary: dict[str, Any], tc: TrainConfig, **extra: Any) -> Path:
    path = metrics_path(out)
    payload = {"stage": stage, "train_config": asdict(tc), **summary, **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))
    return path


def frontend_output(net, batch: dict[str, Any], augment=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The front end's output and mask for a batch of audio windows, or the cached front-end features
    (``model.data.feature_cache``: the frozen front end already ran). ``augment`` (SpecAugment) acts on
    the front end's input, or on cached features."""
    if "features" in batch:
        h = batch["features"]
        mask = length_mask(batch["feature_lengths"].to(h.device), h.shape[1])
        if augment is not None:
            h = augment(h, batch["feature_lengths"].to(h.device))
    else:
        h, mask = net.frontend(batch["audio"], batch["lengths"], augment=augment)
    return h, mask


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def select_device(name: str) -> torch.device:
    return resolve_device(name)


def freeze(module: nn.Module) -> nn.Module:
    """Frozen parts stay in eval mode (no dropout) and get no gradients."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()
