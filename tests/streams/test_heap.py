import os
import subprocess
import sys

import numpy as np

from streams.heap import allocator, jemalloc_library, release_free_memory
from streams.windowing import ChannelWindower, WindowSpec
from tests.harness import ROOT


def test_release_free_memory_runs_here():
    # glibc on the Linux machines we run on: returns a bool and never raises
    assert release_free_memory() in (True, False)


def test_the_allocator_in_use_is_detected():
    # this process runs on glibc's malloc unless the test run itself was started with jemalloc preloaded
    expected = "jemalloc" if "jemalloc" in os.environ.get("LD_PRELOAD", "") else "glibc"
    assert allocator() == expected


def test_a_process_started_with_jemalloc_preloaded_reports_it():
    assert jemalloc_library() is not None, "libjemalloc2 not installed: run scripts/setup.sh"
    out = subprocess.run([sys.executable, "-c", "from streams.heap import allocator; print(allocator())"],
                         env=dict(os.environ, LD_PRELOAD=jemalloc_library()), capture_output=True, text=True,
                         timeout=60, check=True, cwd=ROOT)
    assert out.stdout.strip() == "jemalloc"


def test_channel_buffer_starts_small_and_grows_with_audio():
    spec = WindowSpec(16000)
    w = ChannelWindower("c", "0", spec)
    w.add(0, np.zeros(1600, np.float32))
    assert w.buffer_bytes <= 4 * 4096      # an abandoned call costs kilobytes, not two windows (640 KB)
    windows = []
    for seq in range(1, 80):
        windows += w.add(seq, np.full(1600, seq, np.float32)).windows
    assert [x.index for x in windows] == list(range(len(windows))) and len(windows) == 2
    # window 1 starts at 2.5 s: frames 25..74, values equal to their seq
    np.testing.assert_array_equal(windows[1].samples[:1600], np.full(1600, 25, np.float32))
    assert w.buffer_bytes <= 4 * 4 * spec.window_samples
