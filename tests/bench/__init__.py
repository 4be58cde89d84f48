"""Tests of the benchmarks in bench/ on tiny inputs: their plumbing, not their figures."""
