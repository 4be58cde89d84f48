"""Regenerate the bundled demo calls in voicetone/samples/ (stereo: agent, customer).

Run once by a developer (needs flite); the WAVs are committed so the demo
needs no TTS engine. 8 kHz 16-bit, like telephone audio.
"""

from pathlib import Path

import numpy as np

from model.data.voices import Voice, synthesize
from schemas.resample import resample
from schemas.wav import write_wav

RATE = 8000
OUT = Path(__file__).resolve().parent.parent / "voicetone" / "samples"

CALLS = {
    "call-billing-complaint": [
        ("agent", "Thank you for calling, this is Sam, how can I help you today?", 1.0),
        ("customer", "I have been charged twice for my internet this month and nobody has fixed it.", 0.9),
        ("customer", "This is the third time I am calling, I am really fed up with this terrible service.", 0.9),
        ("agent", "I am sorry about that, let me look at your account right now.", 1.0),
        ("customer", "Honestly this is ridiculous, I want the duplicate charge refunded today.", 0.9),
        ("agent", "I can see the duplicate charge and I have issued a refund of forty dollars.", 1.0),
        ("customer", "Okay, thank you, that is great, I really appreciate your help.", 1.1),
    ],
    "call-delivery-thanks": [
        ("agent", "Good morning, you are speaking with Alex from customer care.", 1.0),
        ("customer", "Hi, I just wanted to say the delivery arrived early and everything was perfect.", 1.1),
        ("agent", "That is wonderful to hear, thank you for letting us know.", 1.1),
        ("customer", "Can you confirm my next order is scheduled for Tuesday the fourth?", 1.0),
        ("agent", "Yes, your next order is scheduled for Tuesday between nine and noon.", 1.0),
        ("customer", "Brilliant, thanks so much, you have been very helpful.", 1.1),
    ],
}
VOICES = {"agent": Voice("flite", "slt", "female", "us"), "customer": Voice("flite", "rms", "male", "us")}


def render(turns) -> np.ndarray:
    tracks = {"agent": [], "customer": []}
    for who, text, rate in turns:
        sr, audio = synthesize(VOICES[who], text, rate=rate)
        audio = resample(audio, sr, RATE)
        pause = np.zeros(int(0.6 * RATE), np.float32)
        for name, track in tracks.items():
            track.append(audio if name == who else np.zeros_like(audio))
            track.append(pause)
    return np.stack([np.concatenate(tracks["agent"]), np.concatenate(tracks["customer"])])


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name, turns in CALLS.items():
        stereo = render(turns)
        write_wav(OUT / f"{name}.wav", RATE, 0.9 * stereo / max(1e-6, np.abs(stereo).max()))
        print(name, stereo.shape[1] / RATE, "s")
