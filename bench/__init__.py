"""Benchmarks of the receiver and the workers against bare Starlette and bare Dramatiq.

Run them from the repository root: ``python -m bench.receiver`` and ``python -m bench.workers``.
"""
