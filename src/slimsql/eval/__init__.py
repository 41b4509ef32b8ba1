"""Evaluation: benchmark loaders, execution and exact-match metrics, runs, reports, comparisons.

Every number slimsql reports about a model comes from here; each metric is a pure
function pinned down by golden tests (``tests/test_eval_*.py``).
"""
