"""bench/pyspy_shares.py: each sample counted once, under the first part its stack names."""

from bench.pyspy_shares import shares


def test_samples_go_to_the_first_matching_part_or_other():
    lines = [
        "thread (1): MainThread;run (a.py:1);VoiceToneModel.predict (model/inference.py:9);_call_impl (t.py:3) 7\n",
        # resampling inside batch assembly counts as resampling (listed first), not as batch assembly
        "thread (1): MainThread;model_batch (streams/pipeline.py:5);resample_fft_rows (schemas/resample.py:2) 3\n",
        "thread (1): MainThread;Worker._ingest (streams/agent.py:1);StreamProcessor.ingest_many (p.py:2) 4\n",
        "thread (2): Thread-1;select (selectors.py:1) 6\n",
        "\n",
    ]
    total, counts = shares(lines)
    assert total == 20
    assert counts == {"model calls": 7, "resampling": 3, "ingest (decode, windowing)": 4, "other": 6}
