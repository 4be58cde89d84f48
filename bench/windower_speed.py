"""How fast ChannelWindower.add takes 100 ms frames (pure Python + numpy).

Run: python -m bench.windower_speed
"""

from __future__ import annotations

import time

import numpy as np

from streams.windowing import ChannelWindower, ChannelRegistry, WindowSpec


def main(n: int = 200_000) -> None:
    frame = np.random.default_rng(0).uniform(-1, 1, 1600).astype(np.float32)  # 100 ms at 16 kHz
    w = ChannelWindower("call", "agent")
    windows = 0
    t0 = time.perf_counter()
    for seq in range(n):
        windows += len(w.add(seq, frame, offset=seq).windows)
    dt = time.perf_counter() - t0
    print(f"ChannelWindower.add: {n / dt:,.0f} frames/s ({dt / n * 1e6:.2f} us/frame, "
          f"{windows} windows, {n / 10 / dt:,.0f}x real time for one channel)")

    reg = ChannelRegistry(WindowSpec())
    channels = 1000
    t0 = time.perf_counter()
    for seq in range(n // channels):
        for c in range(channels):
            reg.add(f"call{c}", "agent", seq, frame, offset=seq * channels + c, now=seq * 0.1)
    dt = time.perf_counter() - t0
    print(f"ChannelRegistry.add over {channels} channels: {n / dt:,.0f} frames/s "
          f"({dt / n * 1e6:.2f} us/frame)")


if __name__ == "__main__":
    main()
