"""The stream processors `bench.bench_e2e` compares the worker with: the same model, topics and events,
each run as `python -m bench.peers.<name>`."""
