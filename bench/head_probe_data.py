"""Does more classifier training data help? The head probe (bench/head_probe.py) with cached features.

Featurizes each manifest once with the frozen encoder of a checkpoint (cached under
--cache), then trains the probe's heads on (a) the base training manifest and (b) the
base plus extra manifests, several seeds each, and scores all of them on the same
held-out test manifest (window-level UA). Since (b) has more windows per epoch, (a) is
also run with its epochs scaled up so that both see the same number of optimiser steps.

    python bench/head_probe_data.py --checkpoint model/weights/default.pt \
        --base data/synth/train.cls.jsonl --extra data/synth2/train.jsonl \
        --test data/synth/test.jsonl --cache data/synth2/probe --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import head_probe  # noqa: E402
from model.checkpoint import load_checkpoint  # noqa: E402
from model.train.classifier_stage import asr_net_from_checkpoint  # noqa: E402


def cached_features(net, manifest: str, representation: str, cache: Path, tag: str, version: str):
    path = cache / f"{tag}.{version}.{representation}.pt"  # the version: another checkpoint never reads this cache
    if path.exists():
        return torch.load(path, weights_only=True)
    t0 = time.time()
    feats = head_probe.featurize(net, manifest, representation)
    torch.save(feats, path)
    print(f"featurized {manifest}: {len(feats[2])} windows in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return feats


def concat(*parts):
    return head_probe.stack_padded(*([p[k] for p in parts] for k in range(3)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--base", default="data/synth/train.cls.jsonl")
    p.add_argument("--extra", nargs="+", required=True)
    p.add_argument("--test", default="data/synth/test.jsonl")
    p.add_argument("--cache", required=True, type=Path)
    p.add_argument("--representation", default="encoder", choices=["encoder", "frontend"])
    p.add_argument("--heads", default="conv")
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-matched-steps", action="store_true", help="skip (a) with epochs scaled to (b)'s steps")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    ck = load_checkpoint(args.checkpoint)
    net = asr_net_from_checkpoint(ck).eval()
    version = ck.get("version", "unversioned")
    base = cached_features(net, args.base, args.representation, args.cache, "base", version)
    extras = [cached_features(net, e, args.representation, args.cache, f"extra{i}", version)
              for i, e in enumerate(args.extra)]
    test = cached_features(net, args.test, args.representation, args.cache, "test", version)
    combined = concat(base, *extras)
    n_a, n_b = len(base[2]), len(combined[2])
    print(f"windows: (a) {n_a}, (b) {n_b}, test {len(test[2])}; class counts (a) "
          f"{torch.bincount(base[2], minlength=3).tolist()} (b) {torch.bincount(combined[2], minlength=3).tolist()} "
          f"test {torch.bincount(test[2], minlength=3).tolist()}", file=sys.stderr, flush=True)
    matched_epochs = max(1, round(args.epochs * n_b / n_a))
    configs = [("a", base, args.epochs), ("b", combined, args.epochs)]
    if not args.no_matched_steps:
        configs.insert(1, ("a-matched-steps", base, matched_epochs))
    rows = []
    for kind in args.heads.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for name, train, epochs in configs:
                r = head_probe.fit(kind, train, test, epochs, seed=seed)
                r.update(config=name, seed=seed, epochs=epochs, train_windows=len(train[2]))
                rows.append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
    summary = {}
    for kind in args.heads.split(","):
        for name, _, epochs in configs:
            rs = [r for r in rows if r["head"] == kind and r["config"] == name]
            te = [r["test_ua"] for r in rs]
            tr = [r["train_ua"] for r in rs]
            summary[f"{kind}:{name}"] = {
                "epochs": epochs, "train_windows": rs[0]["train_windows"], "seeds": len(rs),
                "test_ua_mean": statistics.mean(te), "test_ua_sd": statistics.stdev(te) if len(te) > 1 else 0.0,
                "test_ua": te, "train_ua_mean": statistics.mean(tr)}
    print(json.dumps({"checkpoint": args.checkpoint, "model_version": ck.get("version"),
                      "representation": args.representation, "base": args.base, "extra": args.extra,
                      "test": args.test, "summary": summary, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
