"""Speed benchmarks of ``searle_core`` (scripts that print the figure, not tests): ``python -m benchmarks``."""
