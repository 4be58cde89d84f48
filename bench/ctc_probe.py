"""Where do the words get lost? A CTC probe on each representation of the model.

The ASR stage has stayed on the CTC plateau (~2.6 nats per character) however
long it ran (docs/model-report.md). This probe asks which representation still
carries the characters: for each of stacked log-mel frames (4 x 10 ms, the
front end's input at its 40 ms rate), the front end's conv subsampler output,
the frozen front end's output and the ASR encoder's output, a fresh 2-layer
BiLSTM with a CTC head is trained to memorise the transcripts of the same
``--n`` utterances (no augmentation, features computed once). A representation
that keeps the information is memorised quickly (low train CTC); one that
lost it stays near the plateau. Also the number of principal components
holding 90% of each representation's variance.

    python bench/ctc_probe.py --checkpoint model/weights/default.pt [--manifest data/synth/train.pl.jsonl]
                              [--n 256] [--steps 600] [--held-out 0] [--untrained]

With ``--held-out K`` the probe also scores K further utterances it never saw: whether the
representation lets words be *learnt* (generalise), not only memorised.
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
from model.data.dataset import WindowDataset, collate_windows  # noqa: E402
from model.data.manifest import read_manifest  # noqa: E402
from model.network import VoiceToneNet  # noqa: E402
from model.tokenizer import PAD, CharTokenizer  # noqa: E402
from model.train.asr_stage import asr_entries  # noqa: E402

NAMES = ("logmel", "subsample", "frontend", "encoder")


@torch.no_grad()
def representations(net: VoiceToneNet, ds: WindowDataset, tok: CharTokenizer, batch: int = 32):
    """Per utterance: each representation [T', D] at the 40 ms rate, its character targets, and
    the manifest entry it came from."""
    feats: dict[str, list[torch.Tensor]] = {k: [] for k in NAMES}
    targets, owners = [], []
    fe = net.frontend
    for i in range(0, len(ds), batch):
        b = collate_windows([ds[j] for j in range(i, min(len(ds), i + batch))])
        lm, flen = fe.featurize(b["audio"], b["lengths"])
        sub, _ = fe.subsample(lm, flen)
        sub = fe.in_norm(sub)
        h, mask = fe(b["audio"], b["lengths"])
        enc = net.asr.encode(h, mask)
        for r in range(len(b["lengths"])):
            if not b["transcripts"][r]:
                continue  # a crop of a segment longer than the window: no transcript of its own
            n = int(mask[r].sum())
            x = lm[r, :int(flen[r])]
            stacked = x[: x.shape[0] // 4 * 4].reshape(-1, 4 * x.shape[1])
            n = min(n, stacked.shape[0])
            for k, v in (("logmel", stacked), ("subsample", sub[r]), ("frontend", h[r]), ("encoder", enc[r])):
                feats[k].append(v[:n].clone())
            targets.append(torch.tensor(tok.encode(None, b["transcripts"][r])[1:-1]))
            owners.append(ds.entry_index(i + r))
    return feats, targets, owners


def effective_dims(xs: list[torch.Tensor], share: float = 0.9) -> int:
    a = torch.cat(xs).double()
    sv = torch.linalg.svdvals(a - a.mean(0))
    e = sv ** 2 / (sv ** 2).sum()
    return int((e.cumsum(0) < share).sum()) + 1


def ctc_of(norm, lstm, head, xs, ys, idx) -> torch.Tensor:
    x = nn.utils.rnn.pad_sequence([xs[i] for i in idx], batch_first=True)
    y = nn.utils.rnn.pad_sequence([ys[i] for i in idx], batch_first=True, padding_value=PAD)
    xl = torch.tensor([len(xs[i]) for i in idx])
    yl = torch.tensor([len(ys[i]) for i in idx])
    out, _ = lstm(norm(x))
    lp = F.log_softmax(head(out), -1).transpose(0, 1)
    return F.ctc_loss(lp, y, xl, yl, blank=PAD, reduction="mean", zero_infinity=True)


def probe(xs: list[torch.Tensor], ys: list[torch.Tensor], vocab: int, steps: int, n_train: int,
          seed: int = 0) -> tuple[list[float], float | None]:
    """(train CTC per character averaged over each 100 steps, CTC on the utterances after the
    first ``n_train``, which it never trained on: None when there are none)."""
    torch.manual_seed(seed)
    d = xs[0].shape[1]
    norm, lstm, head = nn.LayerNorm(d), nn.LSTM(d, 128, 2, batch_first=True, bidirectional=True), nn.Linear(256, vocab)
    params = [*norm.parameters(), *lstm.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, 2e-3)
    curve, run = [], []
    for step in range(steps):
        loss = ctc_of(norm, lstm, head, xs, ys, torch.randint(0, n_train, (16,)).tolist())
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        run.append(float(loss.detach()))
        if (step + 1) % 100 == 0:
            curve.append(sum(run) / len(run))
            run = []
    if run:  # a last partial hundred (or a run shorter than 100 steps)
        curve.append(sum(run) / len(run))
    if n_train >= len(xs):
        return curve, None
    with torch.no_grad():
        held = [float(ctc_of(norm, lstm, head, xs, ys, list(range(i, min(len(xs), i + 64)))))
                for i in range(n_train, len(xs), 64)]
    return curve, sum(held) / len(held)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="an ASR-stage (or classifier) checkpoint")
    p.add_argument("--manifest", default="data/synth/train.pl.jsonl")
    p.add_argument("--n", type=int, default=256, help="utterances to memorise")
    p.add_argument("--held-out", type=int, default=0, help="further utterances to score, never trained on")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--window-s", type=float, default=8.0)
    p.add_argument("--untrained", action="store_true",
                   help="the checkpoint's architecture with random weights (seeded): what training added or lost")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    console = Console(stderr=True)
    ck = load_checkpoint(args.checkpoint)
    net = asr_net_from_checkpoint(ck, weights=not args.untrained)
    cfg = net.cfg
    net.eval()
    entries = asr_entries(read_manifest(args.manifest), args.window_s)
    tok = CharTokenizer.build(e.transcript for e in entries)
    ds = WindowDataset(entries[:args.n + args.held_out], cfg.sample_rate, args.window_s, random_crop=False)
    feats, targets, owners = representations(net, ds, tok)
    n_train = sum(1 for o in owners if o < args.n)  # items keep the manifest's order
    rows = []
    for name in NAMES:
        t0 = time.time()
        curve, held = probe(feats[name], targets, len(tok), args.steps, n_train)
        rows.append({"representation": name, "dim": int(feats[name][0].shape[1]),
                     "dims_90pct_variance": effective_dims(feats[name]), "ctc_per_100_steps": curve,
                     "held_out_ctc": held, "seconds": time.time() - t0})
        console.print(f"{name}: " + " ".join(f"{c:.2f}" for c in curve)
                      + ("" if held is None else f" | held-out {held:.2f}"))
    what = f"{args.checkpoint}, untrained" if args.untrained else args.checkpoint
    table = Table(title=f"CTC probe: BiLSTM on {n_train} utterances, {len(targets) - n_train} held out ({what})")
    for col in ("representation", "dim", "dims for 90% variance", "train CTC first 100 steps", "last 100 steps",
                "held-out CTC"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["representation"], str(r["dim"]), str(r["dims_90pct_variance"]),
                      f"{r['ctc_per_100_steps'][0]:.2f}", f"{r['ctc_per_100_steps'][-1]:.2f}",
                      "-" if r["held_out_ctc"] is None else f"{r['held_out_ctc']:.2f}")
    console.print(table)
    print(json.dumps({"checkpoint": args.checkpoint, "untrained": args.untrained,
                      "model_version": ck.get("version"), "n": n_train, "held_out": len(targets) - n_train,
                      "steps": args.steps, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
