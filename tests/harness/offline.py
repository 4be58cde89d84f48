"""The stream processor without Kafka or torch: a deterministic stand-in model, contract frames of audio,
and an offline run of them."""

from __future__ import annotations

import numpy as np

from schemas.audio import encode_audio
from schemas.events import as_json_dict
from schemas.frames import encode_frame
from streams.offline import OfflineRunner


class EnergyModel:
    """Speech probability from RMS energy, sentiment from low/high band balance."""

    sample_rate = 16000
    version = "energy-test"

    def predict(self, audio, lengths):
        speech, sent = [], []
        for row, n in zip(audio, lengths):
            x = row[:n]
            rms = float(np.sqrt(np.mean(x ** 2))) if n else 0.0
            speech.append(min(1.0, rms * 10))
            spec = np.abs(np.fft.rfft(x)) if n else np.ones(3)
            lo, mid, hi = (float(b.sum()) + 1e-6 for b in np.array_split(spec, 3))
            t = lo + mid + hi
            sent.append([lo / t, mid / t, hi / t])
        return np.array(speech, np.float32), np.array(sent, np.float32)


def frames(call, channel, audio, rate=16000, frame_ms=100, encoding="pcm_s16le", end=True, start_seq=0,
           ts_start_ms=None, meta=None):
    """Contract frames of ``audio``; with ``ts_start_ms`` each carries its ts_ms, with ``meta`` the first carries it."""
    step = rate * frame_ms // 1000
    n = -(-audio.size // step)
    out = []
    for i in range(n):
        f = {"v": 1, "call_id": call, "channel": channel, "seq": start_seq + i, "sample_rate": rate,
             "encoding": encoding, "audio": encode_audio(encoding, audio[i * step:(i + 1) * step]),
             "end": end and i == n - 1}
        if ts_start_ms is not None:
            f["ts_ms"] = ts_start_ms + i * frame_ms
        if meta is not None and i == 0:
            f["meta"] = meta
        out.append((call.encode(), encode_frame(f)))
    return out


def tone(seconds, freq, rate=16000, amp=0.3):
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def run(messages, model=None, config=None, batch=4):
    r = OfflineRunner(model or EnergyModel(), config, max_batch_size=batch)
    r.feed(messages)
    return r.finish()


def published(out) -> list[dict]:
    """The segment, aggregate and call events of a processor's output, as a consumer reads them."""
    return [as_json_dict(e) for e in out.segments + out.aggregates + out.calls]
