"""Is the sentiment classifier too weak for what the frozen encoder carries? A head probe.

The classifier stage fits its own training windows no better than it scores held-out
ones (~0.44 vs ~0.47 UA, docs/model-report.md): it underfits. This probe computes a
checkpoint's frozen representation once for every fixed 5 s window of a training and
a test manifest (no augmentation), then trains several sentiment heads on it in
seconds and reports train and held-out window-level unweighted accuracy:

* ``pool``: the shipped head (attention pooling + MLP),
* ``lstm``: a 1-layer BiLSTM over the frames, then the same pooling + MLP,
* ``conv``: two 1-D convolutions (kernel 5) over the frames, then pooling + MLP.

A head that does much better than ``pool`` on held-out windows means words and tone are
in the encoder but a bag-of-frames pooling cannot read them.

    python bench/head_probe.py --checkpoint model/weights/default.pt [--train data/synth/train.cls.jsonl]
                               [--test data/synth/test.jsonl] [--epochs 25] [--representation encoder]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from model.checkpoint import load_checkpoint  # noqa: E402
from model.train.classifier_stage import asr_net_from_checkpoint  # noqa: E402
from model.classifier import SentimentClassifier  # noqa: E402
from model.config import ModelConfig  # noqa: E402
from model.data.dataset import WindowDataset, collate_windows  # noqa: E402
from model.data.manifest import read_manifest  # noqa: E402
from model.evaluate import unweighted_accuracy  # noqa: E402
from model.network import VoiceToneNet  # noqa: E402

HEADS = ("pool", "lstm", "conv")


@torch.no_grad()
def featurize(net: VoiceToneNet, manifest: str, representation: str, batch: int = 32):
    """(features [N, T, D], masks [N, T], sentiment labels [N]) of the labelled speech windows."""
    entries = [e for e in read_manifest(manifest) if e.speech and e.sentiment is not None]
    ds = WindowDataset(entries, net.cfg.sample_rate, 5.0, random_crop=False)
    xs, ms, ys = [], [], []
    fe = net.frontend
    for i in range(0, len(ds), batch):
        b = collate_windows([ds[j] for j in range(i, min(len(ds), i + batch))])
        lm, flen = fe.featurize(b["audio"], b["lengths"])
        h, mask = fe.encode(lm, flen)
        parts = {"frontend": h}
        if "encoder" in representation:
            parts["encoder"] = net.asr.encode(h, mask)
        if "subsampler" in representation:   # the front end's most phonetic frames (bench/phone_probe.py)
            parts["subsampler"] = fe.in_norm(fe.subsample(lm, flen)[0]) * mask.unsqueeze(-1).to(h.dtype)
        x = torch.cat([parts[k] for k in representation.split("+")], -1)
        xs.append(x); ms.append(mask); ys.append(b["sentiment"])
    return stack_padded(xs, ms, ys)


def pad_stack(xs: list[torch.Tensor], ms: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate feature / mask chunks of different lengths, zero-padding time to the longest."""
    t = max(x.shape[1] for x in xs)
    return (torch.cat([F.pad(x, (0, 0, 0, t - x.shape[1])) for x in xs]),
            torch.cat([F.pad(m, (0, t - m.shape[1]), value=False) for m in ms]))


def stack_padded(xs: list[torch.Tensor], ms: list[torch.Tensor], ys: list[torch.Tensor]):
    """``pad_stack`` plus the chunks' labels."""
    return (*pad_stack(xs, ms), torch.cat(ys))


class Head(nn.Module):
    """The shipped classifier (``pool`` or ``conv`` context: model.classifier, so the probe measures
    what the classifier stage trains), or, probe-only, a residual BiLSTM over the frames before it."""

    def __init__(self, kind: str, dim: int):
        super().__init__()
        self.cls = SentimentClassifier(ModelConfig(cls_context="pool" if kind == "lstm" else kind), in_dim=dim)
        self.lstm = nn.LSTM(dim, dim // 2, batch_first=True, bidirectional=True) if kind == "lstm" else None
        self.norm = nn.LayerNorm(dim) if kind == "lstm" else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.lstm is not None:
            x = x + self.lstm(self.norm(x))[0] * mask.unsqueeze(-1).to(x.dtype)
        return self.cls(x, mask)[0]   # sentiment logits; the speech logit is not probed


def fit(kind: str, train, test, epochs: int, seed: int = 0, fraction: float = 1.0) -> dict[str, float]:
    """Train one head; with ``fraction`` < 1 on that random share of the training windows, for
    proportionally more epochs (the same number of updates), so a learning curve isolates data."""
    torch.manual_seed(seed)
    (x, m, y), (xt, mt, yt) = train, test
    if fraction < 1.0:
        keep = torch.randperm(len(y))[: max(1, int(round(fraction * len(y))))]
        x, m, y = x[keep], m[keep], y[keep]
        epochs = int(round(epochs / fraction))
    head = Head(kind, x.shape[-1])
    opt = torch.optim.AdamW(head.parameters(), 1e-3, weight_decay=0.01)
    counts = torch.bincount(y, minlength=3).float()
    weight = counts.sum() / (3 * counts.clamp(min=1))
    t0 = time.time()
    for _ in range(epochs):
        head.train()
        for idx in torch.randperm(len(y)).split(32):
            loss = F.cross_entropy(head(x[idx], m[idx]), y[idx], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    head.eval()

    def pred(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([head(a[i:i + 256], b[i:i + 256]).argmax(-1) for i in range(0, len(a), 256)])

    return {"head": kind, "fraction": fraction, "train_windows": len(y), "train_ua": unweighted_accuracy(y.numpy(), pred(x, m).numpy()),
            "test_ua": unweighted_accuracy(yt.numpy(), pred(xt, mt).numpy()), "seconds": time.time() - t0,
            "params": sum(p.numel() for p in head.parameters())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="an asr-stage or classifier checkpoint")
    p.add_argument("--train", default="data/synth/train.cls.jsonl")
    p.add_argument("--test", default="data/synth/test.jsonl")
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--representation", default="encoder",
                   choices=["encoder", "frontend", "subsampler", "encoder+subsampler", "encoder+frontend"],
                   help="what the heads read; A+B: both concatenated per frame")
    p.add_argument("--heads", default=",".join(HEADS))
    p.add_argument("--fractions", default="1",
                   help="comma-separated shares of the training windows (a learning curve: does more data help?)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    console = Console(stderr=True)
    ck = load_checkpoint(args.checkpoint)
    net = asr_net_from_checkpoint(ck).eval()
    t0 = time.time()
    train = featurize(net, args.train, args.representation)
    test = featurize(net, args.test, args.representation)
    console.print(f"features: {len(train[2])} train, {len(test[2])} test windows in {time.time() - t0:.0f} s")
    rows = []
    for kind in args.heads.split(","):
        for fraction in map(float, args.fractions.split(",")):
            rows.append(fit(kind, train, test, args.epochs, fraction=fraction))
            console.print(rows[-1])
    table = Table(title=f"Head probe on the frozen {args.representation} ({args.checkpoint}), window-level UA")
    for col in ("head", "params", "train windows", "train UA", "held-out UA", "seconds"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["head"], str(r["params"]), str(r["train_windows"]), f"{r['train_ua']:.3f}",
                      f"{r['test_ua']:.3f}", f"{r['seconds']:.0f}")
    console.print(table)
    print(json.dumps({"checkpoint": args.checkpoint, "model_version": ck.get("version"),
                      "representation": args.representation, "epochs": args.epochs,
                      "train_windows": len(train[2]), "test_windows": len(test[2]), "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
