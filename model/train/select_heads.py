"""``voicetone train select-heads``: keep some of a checkpoint's classifier heads.

Each head costs ~5 % more inference (model/classifier.py `ClassifierEnsemble`), so a deployment short
of compute keeps fewer; the model report uses it to score each head, and each subset, on its own.
Front end and encoder are copied unchanged; the result is a checkpoint like any other (its version
is the hash of what it keeps).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model.checkpoint import load_checkpoint, save_checkpoint


def select_heads(ckpt: dict, keep: list[int]) -> tuple[dict, int]:
    """The classifier state of heads ``keep`` (in that order) of an ensemble checkpoint, and its
    head count; one head gets the single-head layout every earlier checkpoint has."""
    state = ckpt["state"]["classifier"]
    n = int(ckpt["config"].get("cls_heads", 1))
    if n < 2:
        raise ValueError("the checkpoint has one classifier head: nothing to select")
    if not keep or len(set(keep)) != len(keep) or any(not 0 <= k < n for k in keep):
        raise ValueError(f"--keep must name distinct heads among 0..{n - 1}, got {keep}")
    out = {}
    for new, old in enumerate(keep):
        prefix = f"heads.{old}."
        for key, value in state.items():
            if key.startswith(prefix):
                rest = key[len(prefix):]
                out[rest if len(keep) == 1 else f"heads.{new}.{rest}"] = value
    return out, len(keep)


def _run(args: argparse.Namespace) -> int:
    ck = load_checkpoint(args.checkpoint)
    if ck.get("stage") != "classifier":
        raise SystemExit(f"{args.checkpoint}: a classifier-stage checkpoint is needed, got {ck.get('stage')!r}")
    try:
        keep = [int(k) for k in args.keep.split(",")]
        state, n = select_heads(ck, keep)
    except ValueError as e:
        raise SystemExit(f"select-heads: {e}") from None
    config = dict(ck["config"], cls_heads=n)
    metrics = dict(ck.get("metrics", {}))
    metrics["selected_heads"] = {"from": ck["version"], "keep": keep}
    made = save_checkpoint(args.out, stage="classifier", name=ck["name"], config=config, vocab=ck["vocab"],
                           parts={"frontend": ck["state"]["frontend"], "asr": ck["state"]["asr"],
                                  "classifier": state},
                           metrics=metrics, tensors=ck.get("tensors"), hf_config=ck.get("hf_config"))
    print(json.dumps({"out": str(args.out), "version": made["version"], "heads": keep}))
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("select-heads", help="keep some of a checkpoint's classifier heads "
                                                   "(fewer heads: cheaper inference)")
    p.add_argument("checkpoint", type=Path, help="classifier-stage checkpoint with several heads")
    p.add_argument("--keep", required=True, help="comma-separated head numbers, from 0 (e.g. 0,2)")
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write")
    p.set_defaults(func=_run)
