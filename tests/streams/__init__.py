"""Tests of streams/: windowing, aggregation, batching, the stream processor and the worker, without a broker."""
