"""Benchmarks behind `spatiora bench`: they print figures measured side by side in one run."""
