"""The product end to end: the worker against the real broker, reliability under faults, the examples, deploy
manifests and security."""
