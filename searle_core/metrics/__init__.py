"""Metrics: the benchmarks' metrics and rankings, CIRCO's server scoring, significance."""
