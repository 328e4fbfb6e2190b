"""Benchmarks and reproduction scripts of pemscl (not shipped): they use the public API only."""
