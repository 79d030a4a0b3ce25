"""Benchmark harness: the service against its HTTP ceiling, the naive baseline and the
raw model, driven by wrk. Run `python -m bench --help`; see docs/performance.md."""
