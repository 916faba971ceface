"""Reproducible benchmark suites for ModelPress (see benchmarks/README.md)."""
