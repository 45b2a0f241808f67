"""Internals of the report stage: run records -> per-run metrics -> per-cell summaries -> tables.

The public entry points are ``lsr1bench.report`` (tables, CSV, report.md, baseline export),
``lsr1bench.plots`` and ``lsr1bench.compare``. Nothing here imports torch.
"""
