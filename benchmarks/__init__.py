"""Benchmarks and the chaos run of rees46_loyalty (not part of the package)."""
