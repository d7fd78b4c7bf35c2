"""Benchmarks: ratios measured side by side in one run (the machines are shared and noisy)."""
