"""``python -m mgcda_core.benchmark``: one run, one table, ratios measured side by side.

Each section is a module in this package with ``run(quick: bool) -> list[dict]``; rows are printed as a table
and written to JSON with ``--out``.
"""
