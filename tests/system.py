"""A running tokenbus as real processes for e2e tests: `services.bench.system.System`."""

from services.bench.system import System

__all__ = ["System"]
