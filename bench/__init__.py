"""pyspu benchmarks."""
