"""Tests of the wire formats in schemas/: codecs, frames, events, resampling."""
