"""Benchmarks with their data generators (`python -m bench.<name> --help`); results go to docs/benchmarks.md."""
