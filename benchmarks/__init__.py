"""Benchmarks run by ``aislecast bench [NAMES] [--json]`` (or ``make bench``).

Each benchmark module registers coroutine functions with :func:`benchmark`; a function
returns :class:`Measurement` rows. Peers measured in the same run sit beside ours as
rows with another ``subject``, and the harness prints ratios against the first subject.
"""

from benchmarks._harness import REGISTRY, BenchOptions, Measurement, benchmark, run_benchmarks

__all__ = ["REGISTRY", "BenchOptions", "Measurement", "benchmark", "run_benchmarks"]
