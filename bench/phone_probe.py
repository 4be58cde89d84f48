"""Does a front end carry phones? A frame-level phone probe on frozen representations.

A frame-level phone target in the ASR stage (`voicetone train asr --phone-weight`) plateaus at 0.41 frame
accuracy on its training data, which points at the front end beneath the ASR encoder. This probe gauges a
front end directly and cheaply, in the way self-supervised speech models are usually compared: features
are computed once per utterance with everything frozen, and a linear classifier (and a one-hidden-layer
MLP) learns the phone sounding at each 40 ms frame's centre from the forced alignment of ``voicetone data
align``; it is scored on frames of utterances it never saw. Several checkpoints (pretrain, asr or
classifier stage) are compared in one run, on the same utterances, beside stacked log-mel frames (the
front end's own input at the same rate) as the floor every learned representation should beat.

    python bench/phone_probe.py data/s10/pretrain.pt model/weights/default.pt \
        [--manifest data/synth/train.al.jsonl] [--n 400] [--held-out 150] [--steps 1500] [--layers]
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
from model.data.dataset import WindowDataset, collate_windows  # noqa: E402
from model.data.manifest import read_manifest  # noqa: E402
from model.features import mfcc_with_deltas, pool_frames  # noqa: E402
from model.frontend import SUBSAMPLING  # noqa: E402
from model.kmeans import kmeans  # noqa: E402
from model.network import VoiceToneNet  # noqa: E402
from model.train.asr_stage import frame_phone_labels, load_frontend  # noqa: E402
from model.train.classifier_stage import asr_net_from_checkpoint  # noqa: E402


def networks(path: str) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """(front end, ASR branch or None) of any stage's checkpoint, frozen."""
    ck = load_checkpoint(path)
    if ck["stage"] == "pretrain":
        _, fe, _, _ = load_frontend(path, None, "cpu")
        return fe.eval(), None
    net: VoiceToneNet = asr_net_from_checkpoint(ck)
    return net.frontend.eval(), net.asr.eval()


def layer_taps(name: str, fe: torch.nn.Module, outs: dict) -> list[str]:
    """Hooks that keep the front end's inner representations (the conv subsampler's normalised output,
    then each transformer layer's) in ``outs`` on every forward; their names."""
    taps = [(f"{name}:subsampler", fe.in_norm)] + [(f"{name}:layer{i + 1}", layer)
                                                   for i, layer in enumerate(fe.encoder.layers)]
    for key, module in taps:
        module.register_forward_hook(lambda _m, _i, out, key=key: outs.__setitem__(key, out))
    return [k for k, _ in taps]


@torch.no_grad()
def features(nets: dict, ds: WindowDataset, index: dict[str, int], batch: int = 32, layers: bool = False):
    """Per representation name: (frames [N, D], phone ids [N]) over every aligned frame of ``ds``, and
    the item each frame came from, for ``nets`` (name -> `networks`). With ``layers`` also the front
    ends' inner representations."""
    outs: dict[str, torch.Tensor] = {}
    inner = [t for k, (fe, _) in nets.items() for t in layer_taps(k, fe, outs)] if layers else []
    names = (["logmel", "mfcc"] + inner + [f"{k}:frontend" for k in nets]
             + [f"{k}:encoder" for k, (_, a) in nets.items() if a])
    xs: dict[str, list[torch.Tensor]] = {k: [] for k in names}
    ys, owners = [], []
    first_fe = next(iter(nets.values()))[0]
    for i in range(0, len(ds), batch):
        items = [ds[j] for j in range(i, min(len(ds), i + batch))]
        b = collate_windows(items)
        lm, flen = first_fe.featurize(b["audio"], b["lengths"])
        # what the pretraining's k-means clusters: MFCC + deltas pooled to the 40 ms rate
        mfcc, _ = pool_frames(mfcc_with_deltas(lm, first_fe.cfg.n_mfcc), flen, SUBSAMPLING)
        outs.clear()
        for k, (fe, asr) in nets.items():
            h, mask = fe(b["audio"], b["lengths"])
            outs[f"{k}:frontend"] = h
            if asr is not None:
                outs[f"{k}:encoder"] = asr.encode(h, mask)
        n_frames = mask.sum(1)
        labels = frame_phone_labels(b["phones"], b["durations"], n_frames, mask.shape[1], index)
        for r in range(len(items)):
            keep = labels[r] >= 0
            if not b["phones"][r] or not keep.any():
                continue
            x = lm[r, :int(flen[r])]
            stacked = x[: x.shape[0] // SUBSAMPLING * SUBSAMPLING].reshape(-1, SUBSAMPLING * x.shape[1])
            n = min(int(n_frames[r]), stacked.shape[0])
            keep = keep[:n]
            xs["logmel"].append(stacked[:n][keep])
            xs["mfcc"].append(mfcc[r, :n][keep])
            for k, v in outs.items():
                xs[k].append(v[r, :n][keep])
            ys.append(labels[r, :n][keep])
            owners.append(torch.full((int(keep.sum()),), i + r))
    return ({k: torch.cat(v) for k, v in xs.items()}, torch.cat(ys), torch.cat(owners))


def standardized(x: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """Each dimension to zero mean, unit variance over the training frames."""
    return (x - x[train].mean(0)) / (x[train].std(0) + 1e-5)


def probe(x: torch.Tensor, y: torch.Tensor, train: torch.Tensor, classes: int, hidden: int, steps: int,
          silence: int = -1, seed: int = 0) -> tuple[float, float, float]:
    """(train, held-out, held-out on phones other than ``silence``) frame accuracy of a linear (hidden 0)
    or one-hidden-layer classifier."""
    torch.manual_seed(seed)
    x = standardized(x, train)
    d = x.shape[1]
    net = nn.Linear(d, classes) if hidden == 0 else nn.Sequential(nn.Linear(d, hidden), nn.GELU(),
                                                                   nn.Linear(hidden, classes))
    opt = torch.optim.Adam(net.parameters(), 2e-3, weight_decay=1e-4)
    xt, yt = x[train], y[train]
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (512,))
        loss = F.cross_entropy(net(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = lambda m: float((net(x[m]).argmax(1) == y[m]).float().mean())  # noqa: E731
        return acc(train), acc(~train), acc(~train & (y != silence))


def cluster_purity(x: torch.Tensor, y: torch.Tensor, train: torch.Tensor, k: int, silence: int,
                   standardize: bool, seed: int = 0) -> float:
    """How phonetic a k-means target is: clusters fitted on the training frames (as pretraining fits its
    targets), each named by its most frequent training phone; the held-out frames' accuracy under that
    naming (silence excluded). Pretraining can only learn what its targets tell apart."""
    if standardize:
        x = standardized(x, train)
    xt = x[train]
    sample = torch.randperm(len(xt), generator=torch.Generator().manual_seed(seed))[:30_000]
    centroids, _ = kmeans(xt[sample], k, seed=seed)
    assign = torch.cdist(x, centroids).argmin(1)
    classes = int(y.max()) + 1
    table = torch.zeros(k, classes)
    table.index_put_((assign[train], y[train]), torch.ones(int(train.sum())), accumulate=True)
    named = table.argmax(1)[assign]
    held = ~train & (y != silence)
    return float((named[held] == y[held]).float().mean())


def with_context(x: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """Each frame with its neighbours (t-1, t, t+1) of the same utterance: ~120 ms per target."""
    def neighbour(shift: int) -> torch.Tensor:   # a frame's own value at its utterance's edges
        edge = torch.roll(owner, shift, 0) != owner
        return torch.where(edge.unsqueeze(1), x, torch.roll(x, shift, 0))

    return torch.cat([neighbour(1), x, neighbour(-1)], 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+", help="pretrain, asr or classifier checkpoints to compare")
    p.add_argument("--manifest", default="data/synth/train.al.jsonl", help="with phones (voicetone data align)")
    p.add_argument("--n", type=int, default=400, help="aligned utterances to train the probes on")
    p.add_argument("--held-out", type=int, default=150, help="further aligned utterances to score")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--hidden", type=int, default=256, help="width of the MLP probe")
    p.add_argument("--window-s", type=float, default=8.0)
    p.add_argument("--layers", action="store_true", help="also each front end's subsampler and transformer layers")
    p.add_argument("--targets", action="store_true",
                   help="also how phonetic k-means pretraining targets are (MFCC as now, standardised, with context)")
    args = p.parse_args(argv)
    console = Console(stderr=True)
    aligned = [e for e in read_manifest(args.manifest) if e.speech and e.phones]
    if len(aligned) < args.n + args.held_out:
        raise SystemExit(f"{args.manifest}: {len(aligned)} aligned entries, --n + --held-out needs "
                         f"{args.n + args.held_out} (run `voicetone data align` on a larger manifest)")
    # held-out utterances by *voice* as well, so the probe cannot lean on a speaker it has heard
    voices = sorted({e.speaker for e in aligned})
    held_voices = set(voices[::4])
    train_e = [e for e in aligned if e.speaker not in held_voices][:args.n]
    test_e = [e for e in aligned if e.speaker in held_voices][:args.held_out]
    vocab = sorted({ph[0] for e in train_e + test_e for ph in e.phones})
    index = {ph: i for i, ph in enumerate(vocab)}
    nets = {Path(p).stem if Path(p).stem not in ("asr", "classifier", "pretrain") else p: networks(p)
            for p in args.checkpoints}
    sample_rate = next(iter(nets.values()))[0].cfg.sample_rate
    ds = WindowDataset(train_e + test_e, sample_rate, args.window_s, random_crop=False)
    t0 = time.time()
    xs, y, owner = features(nets, ds, index, layers=args.layers)
    train = owner < len(train_e)
    console.print(f"features: {len(y)} frames ({int(train.sum())} train, {int((~train).sum())} held out), "
                  f"{len(vocab)} phones, {time.time() - t0:.0f} s")
    majority = float((y[~train] == torch.bincount(y[train]).argmax()).float().mean())
    silence = index.get("SIL", -1)   # PocketSphinx's silence: the frames any representation gets right
    rows = []
    for name, x in xs.items():
        lin = probe(x, y, train, len(vocab), 0, args.steps, silence)
        mlp = probe(x, y, train, len(vocab), args.hidden, args.steps, silence)
        rows.append({"representation": name, "dim": int(x.shape[1]), "linear_train": lin[0], "linear_held_out": lin[1],
                     "linear_held_out_no_sil": lin[2], "mlp_train": mlp[0], "mlp_held_out": mlp[1],
                     "mlp_held_out_no_sil": mlp[2]})
        console.print(f"{name}: linear {lin[0]:.3f} / {lin[1]:.3f} ({lin[2]:.3f} w/o silence), "
                      f"mlp {mlp[0]:.3f} / {mlp[1]:.3f} ({mlp[2]:.3f})")
    targets = None
    if args.targets:
        mf = xs["mfcc"]
        variants = {"mfcc (as pretraining)": (mf, False), "mfcc standardised": (mf, True),
                    "mfcc standardised, +-1 frame": (with_context(mf, owner), True),
                    "log-mel standardised": (xs["logmel"], True)}
        targets = []
        for label, (x, std) in variants.items():
            for k in (64, 256):
                acc = cluster_purity(x, y, train, k, silence, std)
                targets.append({"input": label, "clusters": k, "held_out_no_sil": acc})
                console.print(f"k-means targets, {label}, {k} clusters: held-out phone accuracy {acc:.3f} (no SIL)")
    table = Table(title=f"Phone probe: frame accuracy, {len(train_e)} train / {len(test_e)} held-out utterances "
                        f"(held-out voices); majority phone {majority:.3f}")
    for col in ("representation", "dim", "linear train", "linear held-out", "(no SIL)", "MLP train", "MLP held-out",
                "(no SIL)"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["representation"], str(r["dim"]), f"{r['linear_train']:.3f}", f"{r['linear_held_out']:.3f}",
                      f"{r['linear_held_out_no_sil']:.3f}", f"{r['mlp_train']:.3f}", f"{r['mlp_held_out']:.3f}",
                      f"{r['mlp_held_out_no_sil']:.3f}")
    console.print(table)
    print(json.dumps({"bench": "phone_probe", "checkpoints": args.checkpoints, "manifest": args.manifest,
                      "train_utterances": len(train_e), "held_out_utterances": len(test_e),
                      "phones": len(vocab), "majority_held_out": majority, "steps": args.steps, "rows": rows,
                      "targets": targets}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
