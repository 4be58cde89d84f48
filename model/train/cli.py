"""``voicetone train pretrain|asr|classifier|recipe|select-heads``: the three stages (and the shipped chain) from the
command line.

Each stage reads the previous stage's checkpoint (``--init``) and writes its
own (``--out``) plus ``<out>.metrics.json``; rerunning an interrupted command
resumes from ``<out>.state.pt`` unless ``--no-resume``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from model.data.augment import NOISE_KINDS
from model.config import ModelConfig, apply_overrides, tiny_config
from model.train.common import TrainConfig


def _model_config(args) -> ModelConfig | None:
    """--config FILE (JSON of ModelConfig fields), --tiny, and --set key=value overrides."""
    if args.config is None and not args.tiny and not args.set and not getattr(args, "hf_path", None):
        return None
    base = json.loads(Path(args.config).read_text()) if args.config else {}
    cfg = tiny_config(**base) if args.tiny else ModelConfig.from_dict(base)
    apply_overrides(cfg, args.set)
    if getattr(args, "hf_path", None):
        cfg.frontend, cfg.hf_path = "hf", args.hf_path
    return cfg


def _noise_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = sorted(set(kinds) - set(NOISE_KINDS))
    if not kinds or unknown:
        raise argparse.ArgumentTypeError(f"unknown noise kind(s) {', '.join(unknown) or '(none given)'}; "
                                         f"expected a comma list of {', '.join(NOISE_KINDS)}")
    return kinds


def _train_config(args) -> TrainConfig:
    return TrainConfig(manifest=args.manifest, out=args.out, init=getattr(args, "init", None), steps=args.steps,
                       batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, save_every=args.save_every,
                       seed=args.seed, device=args.device, num_workers=args.workers,
                       fetch_threads=args.fetch_threads, window_s=args.window_s,
                       augment=not args.no_augment, resume=not args.no_resume, bf16=args.bf16,
                       time_budget_s=None if args.max_minutes is None else 60.0 * args.max_minutes,
                       ema=args.ema, noise_kinds=args.noise_kinds)


def _common(p: argparse.ArgumentParser, steps: int, lr: float) -> None:
    p.add_argument("--manifest", required=True, help="JSON-lines training manifest")
    p.add_argument("--out", required=True, help="checkpoint to write")
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--save-every", type=int, default=200, help="steps between resumable state saves")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.add_argument("--fetch-threads", type=int, default=0, metavar="N",
                   help="without --workers: threads that fetch each batch while the model waits (0: as many as "
                        "torch computes with; the batches are the same whatever N)")
    p.add_argument("--window-s", type=float, default=5.0)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--no-resume", action="store_true", help="start over even if <out>.state.pt exists")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast on CUDA")
    p.add_argument("--max-minutes", type=float, help="train for this long: --steps is cut to what the measured "
                   "step rate fits (measured over steps 30-90, inside a --warmup of 90 or more, so the "
                   "schedule still decays fully)")
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="end with an exponential moving average of the trained weights (e.g. 0.999); 0: off")
    p.add_argument("--noise-kinds", type=_noise_kinds, default=NOISE_KINDS, metavar="KIND,KIND,...",
                   help=f"additive noises of the asr and classifier stages' augmentation, drawn uniformly from "
                        f"this list; a kind named twice is drawn twice as often (default: {','.join(NOISE_KINDS)})")
    p.add_argument("--name", default="voicetone", help="model name (the version is name + weights hash)")
    p.add_argument("--features", metavar="DIR",
                   help="train on a cache of the frozen front end's output (voicetone data features) instead of "
                        "running the front end on audio every step (asr and classifier stages)")


def _with_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="JSON file of ModelConfig fields")
    p.add_argument("--tiny", action="store_true", help="the tiny test-size architecture")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one ModelConfig field")


def _run_pretrain(args) -> int:
    _log_setup()
    from model.train.pretrain import run_pretrain

    s = run_pretrain(_train_config(args), _model_config(args) or ModelConfig(), name=args.name)
    print(json.dumps({"stage": "pretrain", "first_loss": s["first"]["loss"], "last_loss": s["last"]["loss"]}))
    return 0


def _run_asr(args) -> int:
    _log_setup()
    from model.train.asr_stage import run_asr

    tc = _train_config(args)
    tc.extra["phone_weight"] = args.phone_weight
    tc.extra["bow_weight"] = args.bow_weight
    tc.extra["train_frontend"] = args.train_frontend
    tc.extra["features"] = args.features
    s = run_asr(tc, _model_config(args), name=args.name)
    # --steps 0 (an untrained encoder, for the acoustic-only ablation) has no losses
    print(json.dumps({"stage": "asr", "first_loss": s.get("first", {}).get("loss"),
                      "last_loss": s.get("last", {}).get("loss"),
                      "decode_sentiment_acc": s["decode_sentiment_acc"], "decode_cer": s["decode_cer"]}))
    return 0


def _run_classifier(args) -> int:
    _log_setup()
    from model.train.classifier_stage import run_classifier

    tc = _train_config(args)
    tc.extra["features"] = args.features
    s = run_classifier(tc, name=args.name, speech_weight=args.speech_weight, head=args.head,
                       heads=args.heads)
    print(json.dumps({"stage": "classifier", "first_loss": s["first"]["loss"], "last_loss": s["last"]["loss"]}
                     | {k: v for k, v in s.items() if k.startswith("eval_")}))
    return 0


def _log_setup() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("pretrain", help="stage 1: self-supervised front end (masked cluster prediction)")
    _common(p, steps=5000, lr=5e-4)
    _with_config_flags(p)
    p.set_defaults(func=_run_pretrain)

    p = subparsers.add_parser("asr", help="stage 2: ASR encoder + decoder on '<sentiment> transcript', front end frozen "
                                             "(unless --train-frontend)")
    _common(p, steps=5000, lr=1e-3)
    p.add_argument("--init", help="pretrain checkpoint (omit with --hf-path), or an asr checkpoint to go on from")
    p.add_argument("--hf-path", help="use a local transformers wav2vec2/HuBERT/WavLM directory as the front end")
    p.add_argument("--phone-weight", type=float, default=0.0,
                   help="weight of a frame-level phone loss on the encoder (needs phone timings in the manifest: "
                        "voicetone data align); 0 (default): CTC + decoder only")
    p.add_argument("--bow-weight", type=float, default=0.0,
                   help="weight of a word-spotting loss on the encoder (each transcript word must be named by "
                        "some frame: bag-of-words targets, max pooled over time; training only); 0 (default): off. "
                        "Tried at 0.5: held-out UA fell by 0.06 (docs/model-report.md)")
    p.add_argument("--train-frontend", action="store_true",
                   help="train the front end in this stage too (off by default: the published design keeps it "
                        "frozen; this measures what freezing a small, little-pretrained front end costs)")
    _with_config_flags(p)
    p.set_defaults(func=_run_asr)

    p = subparsers.add_parser("classifier", help="stage 3: sentiment + speech classifier, front end and encoder frozen")
    _common(p, steps=2000, lr=1e-3)
    p.add_argument("--init", required=True, help="asr-stage checkpoint")
    p.add_argument("--speech-weight", type=float, default=1.0, help="weight of the speech-presence BCE")
    p.add_argument("--head", choices=["conv", "pool"], default="conv",
                   help="conv: two residual convolutions over the encoder frames before the attention pooling "
                        "(reads words, not only a bag of frames); pool: pooling + MLP only")
    p.add_argument("--heads", type=int, default=1,
                   help="train this many classifier heads side by side on the one encoder (each from its own "
                        "random start, each on its own loss); the model averages their probabilities. Four heads "
                        "(the shipped model) infer ~14%% slower than one and train in ~31 min where one took "
                        "22-26 (docs/model-report.md)")
    p.set_defaults(func=_run_classifier)

    from model.train.recipe import add_cli as add_recipe_cli
    from model.train.select_heads import add_cli as add_select_heads_cli
    add_recipe_cli(subparsers)
    add_select_heads_cli(subparsers)
