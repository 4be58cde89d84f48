"""Can the frozen front end be taught *which words* a clip holds? A bag-of-words probe.

The sentiment of this corpus is in its words: a logistic regression on the bag of words of the
*true* transcripts, trained on the training transcripts, labels the held-out sentences at UA
0.95-0.98 (printed first as the ceiling). The ASR stage has to put those words into the encoder
through CTC and the decoder, and stays on a plateau. A weaker target may be easier: this probe
trains a fresh ASR-sized transformer on the frozen representation of whole clips (<= --window-s)
to predict which of the training vocabulary's words occur (multi-label, smooth max over frames),
then scores held-out clips (other voices and sentences): word precision / recall at 0.5, and the
sentiment UA when the ceiling's regression (fitted on true training words) or one fitted on the
probe's own training predictions reads the predicted word probabilities.

    python bench/bow_probe.py [--checkpoint model/weights/default.pt] [--representation frontend]
                              [--epochs 40] [--window-s 8]
    python bench/bow_probe.py --ceiling-only --train TRAIN.jsonl --test TEST.jsonl --window-s 60
        (the true-words ceiling alone, in seconds: is the held-out text classifiable from training words?)
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from head_probe import pad_stack  # noqa: E402
from model.asr import build_asr_encoder  # noqa: E402
from model.checkpoint import load_checkpoint  # noqa: E402
from model.data.dataset import WindowDataset, collate_windows  # noqa: E402
from model.data.manifest import read_manifest  # noqa: E402
from model.evaluate import unweighted_accuracy  # noqa: E402
from model.tokenizer import SENTIMENTS  # noqa: E402
from model.train.asr_stage import asr_entries, bag_of_words, word_vocab  # noqa: E402
from model.train.classifier_stage import asr_net_from_checkpoint  # noqa: E402


@torch.no_grad()
def featurize(net, entries, window_s: float, representation: str):
    """Frozen features of whole clips (one window each), zero-padded to the longest."""
    ds = WindowDataset(entries, net.cfg.sample_rate, window_s + 0.1, random_crop=False)
    assert len(ds) == len(entries), "every clip must fit one window"
    xs, ms = [], []
    for i in range(0, len(ds), 32):
        b = collate_windows([ds[j] for j in range(i, min(len(ds), i + 32))])
        lm, fl = net.frontend.featurize(b["audio"], b["lengths"])
        h, m = net.frontend.encode(lm, fl)
        xs.append(net.asr.encode(h, m) if representation == "encoder" else h)
        ms.append(m)
    return pad_stack(xs, ms)


def regression(x, y, l2: float = 1e-3, steps: int = 300):
    """Multinomial logistic regression (full batch, Adam): weights, bias."""
    w = torch.zeros(x.shape[1], 3, requires_grad=True)
    b = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        (F.cross_entropy(x @ w + b, y) + l2 * (w ** 2).sum()).backward()
        opt.step()
    return w.detach(), b.detach()


def ua_of(fit, x, y) -> float:
    w, b = fit
    return unweighted_accuracy(y.numpy(), (x @ w + b).argmax(1).numpy())


class WordSpotter(nn.Module):
    """An ASR-sized encoder whose frames vote for words; a clip holds a word if some frame says so."""

    def __init__(self, cfg, dim: int, n_words: int):
        super().__init__()
        self.inp = nn.Linear(dim, cfg.d_model)
        self.enc = build_asr_encoder(cfg)
        self.out = nn.Linear(cfg.d_model, n_words)

    def forward(self, x, mask):
        z = self.out(self.enc(self.inp(x), mask)).masked_fill(~mask.unsqueeze(-1), -1e4)
        return torch.logsumexp(z * 3, 1) / 3 - torch.log(mask.sum(1, keepdim=True).float()) / 3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="model/weights/default.pt")
    p.add_argument("--train", default="data/synth/train.jsonl")
    p.add_argument("--test", default="data/synth/test.jsonl")
    p.add_argument("--representation", choices=["frontend", "encoder"], default="frontend")
    p.add_argument("--window-s", type=float, default=8.0)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--min-count", type=int, default=3, help="vocabulary: training words in at least this many clips")
    p.add_argument("--ceiling-only", action="store_true", help="print the true-words ceiling and stop (no probe)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    tr = asr_entries(list(read_manifest(args.train)), args.window_s)
    te = asr_entries(list(read_manifest(args.test)), args.window_s)
    vocab = {w: i for i, w in enumerate(word_vocab((e.transcript for e in tr), min_count=args.min_count))}
    ytr, yte = (bag_of_words([e.transcript for e in es], vocab) for es in (tr, te))
    s_tr = torch.tensor([SENTIMENTS.index(e.sentiment) for e in tr])
    s_te = torch.tensor([SENTIMENTS.index(e.sentiment) for e in te])
    truth = regression(ytr, s_tr)
    ceiling = ua_of(truth, yte, s_te)
    print(f"{len(tr)} train, {len(te)} test clips <= {args.window_s} s; {len(vocab)} words; "
          f"ceiling (true words) UA {ceiling:.3f}", file=sys.stderr)
    if args.ceiling_only:
        print(json.dumps({"train": len(tr), "test": len(te), "words": len(vocab), "ceiling_ua": ceiling}))
        return 0
    net = asr_net_from_checkpoint(load_checkpoint(args.checkpoint)).eval()
    t0 = time.time()
    xtr, mtr = featurize(net, tr, args.window_s, args.representation)
    xte, mte = featurize(net, te, args.window_s, args.representation)
    model = WordSpotter(net.cfg, xtr.shape[-1], len(vocab))
    opt = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=1e-2)
    rows = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(tr)).split(32):
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(model(xtr[idx], mtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if epoch % 5 and epoch != args.epochs:
            continue
        model.eval()
        with torch.no_grad():
            ptr = torch.sigmoid(torch.cat([model(xtr[i:i + 64], mtr[i:i + 64]) for i in range(0, len(tr), 64)]))
            pte = torch.sigmoid(torch.cat([model(xte[i:i + 64], mte[i:i + 64]) for i in range(0, len(te), 64)]))
        hit = ((pte > 0.5) & (yte > 0)).sum().item()
        row = {"epoch": epoch, "loss": total / len(tr), "word_precision": hit / max(1, (pte > 0.5).sum().item()),
               "word_recall": hit / yte.sum().item(), "ua_truth_regression": ua_of(truth, pte, s_te),
               "ua_own_regression": ua_of(regression(ptr, s_tr), pte, s_te), "seconds": time.time() - t0}
        rows.append(row)
        print(row, file=sys.stderr)
    print(json.dumps({"checkpoint": args.checkpoint, "representation": args.representation, "train": len(tr),
                      "test": len(te), "words": len(vocab), "ceiling_ua": ceiling, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
