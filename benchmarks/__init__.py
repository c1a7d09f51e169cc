"""Performance benchmarks (not timed tests): each prints ratios against a baseline measured in
the same run. Run all with ``make benchmark`` or one with ``python benchmarks/bench_<name>.py``."""
