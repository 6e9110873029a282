"""Benchmarks and ratio gates of meshd (router core first); see bench/RESULTS.md."""
