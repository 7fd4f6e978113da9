"""Benchmark: what tokenbus adds on top of the model, and how far one machine goes."""

from services.bench.main import main
from services.bench.options import BenchOptions
from services.bench.run import run_bench

__all__ = ["BenchOptions", "main", "run_bench"]
