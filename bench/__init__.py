"""Benchmarks: run as `uv run python -m bench.<name>`; they print ratios measured in one run."""
