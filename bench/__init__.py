"""Benchmarks of the service: each a module run from the repository root, `python -m bench.<name>`
(docs/benchmarks.md lists them and what each measures)."""
