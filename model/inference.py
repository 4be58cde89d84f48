"""``load()`` and ``VoiceToneModel``: what the streaming worker and ``analyze`` call.

``predict`` runs the cheap path (front end + ASR encoder + classifier) on a
batch of zero-padded windows; ``transcribe`` additionally runs the decoder,
so the cost of full decoding can be measured against it.
"""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, weights_hash
from model.config import ModelConfig
from model.features import resample_fft_torch
from model.network import VoiceToneNet
from model.tokenizer import SENTIMENTS, CharTokenizer
from model.whisper_chunks import ChunkCache

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path(__file__).parent / "weights" / "default.pt"
DEFAULT_CHARS = " '" + "abcdefghijklmnopqrstuvwxyz" + "0123456789"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" picks CUDA when available; "cuda" without a GPU is an error, not a silent fallback."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    return torch.device(device)


class VoiceToneModel:
    """A loaded network plus its tokenizer, ready for batched inference."""

    sample_rate: int
    # On CPU, predict runs a larger batch as forwards of at most this many windows: throughput peaks
    # at 8-16 windows and falls beyond (memory-bound), while the activations grow with the batch
    # (+70 MB at 16, +271 MB at 64 over the model alone). The worker batches up to 64 windows when it
    # catches up; as one forward, two such calls at once left glibc holding ~1 GB after a 15 s stall.
    # 0: the whole batch in one forward. GPUs always take the whole batch (that is where batching pays).
    cpu_max_batch: int = 16
    # chunks whose features a chunked Whisper front end keeps: two per live channel keep every reuse
    chunk_cache_size: int = 2048

    def __init__(self, net: VoiceToneNet, tokenizer: CharTokenizer, version: str,
                 device: torch.device, metrics: dict[str, Any] | None = None):
        self.net = net.to(device).eval()
        self.tokenizer = tokenizer
        self.config: ModelConfig = net.cfg
        self.sample_rate = self.config.sample_rate
        self.version = version
        self.device = device
        self.metrics = metrics or {}
        self.autocast_dtype: torch.dtype | None = None  # e.g. torch.bfloat16
        # CUDA: host windows go through one reused page-locked buffer (a copy from pageable memory
        # is staged by the driver at a fraction of the bus speed; bench/bench_model.py --inputs)
        self.pinned_transfer = device.type == "cuda"
        # CUDA: windows come at their own rate and are resampled on the device (`predict`'s sample_rate),
        # which takes the FFTs off the worker's event loop; on CPU the loop's scipy FFT is the cheaper one.
        # Rates the front end reads as they come (`reads_rate`: 8 kHz) are never resampled, on any device.
        self.resample_on_device = device.type == "cuda"
        self._staging: torch.Tensor | None = None
        self._staging_free: Any = None   # CUDA event: the last copy out of the buffer has finished
        self._staging_lock = threading.Lock()
        # predict runs a traced network (see `_forward`): one trace per padded window length, made on first use
        self._traced: dict[int, Any] = {}
        self._trace_lock = threading.Lock()
        self.use_jit(True)
        # a chunked Whisper front end on CPU keeps the features of recent chunks: the next window of a
        # channel starts with the chunk this one ends with (model/whisper_chunks.py)
        chunk_s = getattr(net.frontend, "chunk_s", 0.0)
        if chunk_s:   # chunked features are not the whole window's: the version says so, as precision does
            self.version = f"{self.version}+chunk{chunk_s:g}"
            if device.type == "cpu":
                net.frontend.cache = ChunkCache(self.chunk_cache_size)

    # -- construction ----------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], device: torch.device) -> "VoiceToneModel":
        cfg = ModelConfig.from_dict(ckpt["config"])
        if ckpt.get("vocab") is None:
            raise ValueError("checkpoint has no vocabulary: it is a pretraining checkpoint, not a model")
        tok = CharTokenizer(ckpt["vocab"])
        net = VoiceToneNet(cfg, len(tok), hf_config=ckpt.get("hf_config"))
        for part in ("frontend", "asr", "classifier"):
            if part not in ckpt["state"]:
                raise ValueError(f"checkpoint of stage {ckpt.get('stage')!r} lacks the {part!r} weights")
            try:
                getattr(net, part).load_state_dict(ckpt["state"][part])
            except RuntimeError as exc:   # names, shapes: the weights of another architecture
                first = str(exc).strip().splitlines()
                detail = first[1].strip() if len(first) > 1 else (first[0] if first else "")
                raise CheckpointError(f"checkpoint {ckpt.get('version')!r}: its {part!r} weights do not fit the "
                                      f"network its config describes (another architecture? {detail})") from None
        return cls(net, tok, ckpt["version"], device, ckpt.get("metrics"))

    @classmethod
    def untrained(cls, cfg: ModelConfig | None = None, device: torch.device | str = "cpu",
                  seed: int = 0) -> "VoiceToneModel":
        """The real architecture with deterministic random weights (no trained model yet)."""
        cfg = cfg or ModelConfig()
        tok = CharTokenizer.build([DEFAULT_CHARS])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = VoiceToneNet(cfg, len(tok))
        return cls(net, tok, f"untrained-{cfg.hash()}", resolve_device(device))

    def save(self, path: str | Path, name: str = "voicetone", metrics: dict[str, Any] | None = None) -> dict:
        """Write a full inference checkpoint (stage "classifier")."""
        hf = self.net.frontend.config_dict() if self.config.frontend == "hf" else None
        return save_checkpoint(path, stage="classifier", name=name, config=self.config.to_dict(),
                               parts={"frontend": self.net.frontend, "asr": self.net.asr,
                                      "classifier": self.net.classifier},
                               vocab=self.tokenizer.vocab, metrics=metrics or self.metrics, hf_config=hf)

    # -- inference ---------------------------------------------------------------------
    def _inputs(self, batch, lengths) -> tuple[torch.Tensor, torch.Tensor]:
        audio = torch.as_tensor(np.asarray(batch) if not isinstance(batch, torch.Tensor) else batch)
        if audio.ndim == 1:
            audio = audio[None]
        if audio.ndim != 2:
            raise ValueError(f"expected a [batch, samples] array, got shape {tuple(audio.shape)}")
        audio = self._to_device(audio)
        if lengths is None:
            lens = torch.full((audio.shape[0],), audio.shape[1], dtype=torch.long)
        else:
            lens = torch.as_tensor(np.asarray(lengths) if not isinstance(lengths, torch.Tensor) else lengths)
            lens = lens.long().clamp(0, audio.shape[1])
            if lens.shape != (audio.shape[0],):
                raise ValueError("lengths must have one entry per window")
        return torch.nan_to_num(audio), lens.to(self.device)

    def _to_device(self, audio: torch.Tensor) -> torch.Tensor:
        if not self.pinned_transfer or audio.device.type != "cpu" or self.device.type != "cuda":
            return audio.to(self.device, torch.float32, non_blocking=True)
        n = audio.numel()
        with self._staging_lock:
            if self._staging is None or self._staging.numel() < n:
                self._staging = torch.empty(max(n, 1), dtype=torch.float32, pin_memory=True)
            elif self._staging_free is not None:
                self._staging_free.synchronize()   # never overwrite what a copy still reads
            buf = self._staging[:n].view(audio.shape)
            buf.copy_(audio)
            out = buf.to(self.device, non_blocking=True)
            self._staging_free = torch.cuda.Event()
            self._staging_free.record()
        return out

    PRECISIONS = ("fp32", "bf16", "int8")

    def set_precision(self, precision: str) -> "VoiceToneModel":
        """fp32 (default); bf16 (autocast; for GPUs and CPUs with bf16 units); int8
        (dynamic quantization of the Linear layers, CPU only: ~1.4x the fp32
        windows/s here, probabilities within ~0.02; activations are scaled per
        batch, so a window's output moves by up to ~0.003 with its batch mates,
        which is why it is not the default). The precision becomes part
        of `version`, which every event carries, since the numbers differ."""
        if precision not in self.PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(self.PRECISIONS)}, not {precision!r}")
        if precision == "int8":
            if self.device.type != "cpu":
                raise ValueError("int8 (dynamic quantization) runs on CPU only; use bf16 on a GPU")
            if self.config.frontend == "whisper":   # Whisper's encoder in CTranslate2's int8, the rest as below
                self.net.frontend.use_runtime("ctranslate2", "int8")
                for part in ("asr", "classifier"):
                    setattr(self.net, part, torch.ao.quantization.quantize_dynamic(
                        getattr(self.net, part), {torch.nn.Linear}, dtype=torch.qint8))
            else:
                self.net = torch.ao.quantization.quantize_dynamic(self.net, {torch.nn.Linear}, dtype=torch.qint8)
        self.autocast_dtype = torch.bfloat16 if precision == "bf16" else None
        if precision != "fp32":
            self.version = f"{self.version}+{precision}"
        return self.use_jit(self.jit)

    def use_jit(self, on: bool) -> "VoiceToneModel":
        """Turn the traced forward off, or on where it is known to hold: our own front end in fp32
        (a transformers front end, autocast and quantized layers stay eager)."""
        self.jit = bool(on) and self.config.frontend == "ssl" and self.autocast_dtype is None and not any(
            "quantized" in type(mod).__module__ for mod in self.net.modules())
        return self

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def reads_rate(self, rate: int) -> bool:
        """Whether `predict` takes windows at ``rate`` as they are, with no resampling anywhere: the
        model's rate, and lower rates its log-mel front end reads on the same frequency grid (8 kHz for
        16 kHz). Held-out answers at 8 kHz match the resampled path's within noise: docs/benchmarks.md."""
        return rate == self.sample_rate or bool(self.net.frontend.reads_rate(rate))

    def predict(self, batch, lengths: Sequence[int] | None = None,
                sample_rate: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Windows [B, samples] at the model's rate (16 kHz), or at ``sample_rate`` (read as it is where
        `reads_rate`, else resampled here, on the model's device) -> (speech probability [B], sentiment
        [B, 3] pos/neu/neg)."""
        audio, lens = self._inputs(batch, lengths)
        rate = None
        if sample_rate is not None and sample_rate != self.sample_rate:
            if self.reads_rate(sample_rate):
                rate = int(sample_rate)
            else:
                audio = resample_fft_torch(audio, sample_rate, self.sample_rate)
                lens = torch.div(lens * self.sample_rate + sample_rate - 1, sample_rate, rounding_mode="floor")
                lens = lens.clamp(max=audio.shape[1])
        if audio.shape[0] == 0:
            return np.zeros(0, np.float32), np.zeros((0, 3), np.float32)
        step = self.cpu_max_batch if self.device.type == "cpu" and self.cpu_max_batch else audio.shape[0]
        speech, sentiment = [], []
        with torch.inference_mode(), self._autocast():
            for i in range(0, audio.shape[0], step):
                sp, se = self._forward(audio[i:i + step], lens[i:i + step], rate)
                speech.append(sp.float().cpu().numpy())
                sentiment.append(se.float().cpu().numpy())
        return np.concatenate(speech), np.concatenate(sentiment)

    # -- traced forward -----------------------------------------------------------------
    # The worker runs the model in a thread beside its busy event loop. Eager PyTorch takes
    # the GIL back after every operator, and a thread waiting for it waits up to the
    # interpreter's switch interval (5 ms) each time: a predict that takes 44 ms alone took
    # ~1 s beside a busy Python thread (bench/gil_convoy.py). A traced network runs the whole
    # forward in C++ with the GIL released once (49 ms there), and is a little faster alone.
    # The network is padding-invariant, so windows are padded to whole seconds (one trace per
    # rate and padded length, any batch size), and each trace is checked against the eager network on
    # its first batch, and on that batch with other lengths: a network whose trace would bake
    # in values (not only shapes) falls back to eager, with a warning.

    def _forward(self, audio: torch.Tensor, lens: torch.Tensor, rate: int | None = None):
        if not self.jit:
            return self._net_at(rate)(audio, lens)
        step = rate or self.sample_rate
        t = audio.shape[1]
        padded = max(step, -(-t // step) * step)
        if padded != t:
            audio = torch.nn.functional.pad(audio, (0, padded - t))
        key = (step, padded)
        traced = self._traced.get(key)
        if traced is None:
            net = self._net_at(rate)
            with self._trace_lock:
                traced = self._traced.get(key) or self._trace(net, audio, lens)
            if traced is None:
                return net(audio, lens)
            self._traced[key] = traced
        return self._run_traced(traced, audio, lens)

    def _net_at(self, rate: int | None) -> torch.nn.Module:
        return self.net if rate is None else _AtRate(self.net, rate)

    @staticmethod
    def _run_traced(traced, audio: torch.Tensor, lens: torch.Tensor):
        # The graph is run as recorded, without TorchScript's profiling executor: on CUDA that
        # re-specialised and fused per input shape, and the fused graph took 727 ms for 128 windows
        # against 6 ms eager on an H100 (bench_model); on CPU it changes nothing.
        # The flag is per thread, so the worker's inference threads each set it here.
        with torch.jit.optimized_execution(False):
            return traced(audio, lens)

    def _trace(self, net: torch.nn.Module, audio: torch.Tensor, lens: torch.Tensor):
        """The checked trace, or None (and eager from now on): tracing is a speed-up, never a failure."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # torch.jit.trace's deprecation and tracer notes
                traced = torch.jit.trace(net, (audio, lens), check_trace=False)
            diff = 0.0   # predict never traces an empty batch
            for ls in (lens, (lens // 2).clamp(min=1)):
                want, got = net(audio, ls), self._run_traced(traced, audio, ls)
                diff = max(diff, *(float((w - g).abs().max()) for w, g in zip(want, got)))
            problem = None if diff <= 1e-4 else f"the trace differs from the eager network by {diff:.2g}"
        except Exception as exc:   # e.g. an operator the tracer cannot record, or a dispatch mode active
            problem = f"tracing failed ({type(exc).__name__}: {exc})"
        if problem is None:
            return traced
        log.warning("%s on a check batch: predict stays eager (slower beside a busy event loop)", problem)
        self.jit = False
        return None

    def transcribe(self, batch, lengths: Sequence[int] | None = None, beam: int = 1) -> list[tuple[str, str]]:
        """Full decoding: [(sentiment label, transcript)] per window."""
        audio, lens = self._inputs(batch, lengths)
        if audio.shape[0] == 0:
            return []
        sids = self.tokenizer.sentiment_ids
        with torch.inference_mode(), self._autocast():
            enc, mask = self.net.encode(audio, lens)
            if beam > 1:
                seqs = self.net.asr.beam_decode(enc, mask, sids, beam=beam)
            else:
                seqs = self.net.asr.greedy_decode(enc, mask, sids)
        out = []
        for s in seqs:
            sentiment, text = self.tokenizer.decode(s)
            out.append((sentiment or SENTIMENTS[1], text))
        return out

    def weights_hash(self) -> str:
        return weights_hash({p: getattr(self.net, p).state_dict() for p in ("frontend", "asr", "classifier")})


class _AtRate(torch.nn.Module):
    """The network on audio at one rate its front end reads as it is: a module of (audio, lengths), as
    tracing needs, sharing the network's weights."""

    def __init__(self, net: VoiceToneNet, rate: int):
        super().__init__()
        self.net, self.rate = net, rate

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor):
        return self.net(audio, lengths, sample_rate=self.rate)


#: models shipped in the package, by name (``VOICETONE_MODEL_PATH=whisper-base``)
BUNDLED = {"default": DEFAULT_CHECKPOINT, "whisper-base": DEFAULT_CHECKPOINT.with_name("whisper-base.pt")}


def load(path: str | Path | None = None, device: str | torch.device = "auto",
         precision: str = "fp32", jit: bool = True) -> VoiceToneModel:
    """Load a classifier-stage checkpoint; ``None`` = the bundled default, or, until one
    is bundled, a deterministically seeded untrained network (with a warning); the name of a
    bundled model (`BUNDLED`, e.g. ``whisper-base``) where no file of that name exists.
    ``precision``: see `VoiceToneModel.set_precision`; ``jit=False`` keeps predict eager."""
    dev = resolve_device(device)
    if path is not None and str(path) in BUNDLED and not Path(path).exists():
        path = BUNDLED[str(path)]
    if path is None and not DEFAULT_CHECKPOINT.exists():
        model = VoiceToneModel.untrained(device=dev)
        log.warning("no trained model at %s: using an UNTRAINED network (%s); its outputs are meaningless",
                    DEFAULT_CHECKPOINT, model.version)
    else:
        model = VoiceToneModel.from_checkpoint(load_checkpoint(path or DEFAULT_CHECKPOINT), dev)
    return model.set_precision(precision).use_jit(jit)
