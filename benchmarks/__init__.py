"""Benchmarks: plain-Python commands that print ratios measured side by side in one run.

Each module runs as ``python -m benchmarks.<name>`` (docs/BENCHMARKS.md); ``run_all`` runs them
all. They sit above the job, like the applications: they may import ``pipeline`` and
``transforms``, and nothing imports them.
"""
