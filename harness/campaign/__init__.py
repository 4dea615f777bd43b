"""Campaigns: many iterations of the main job (``repro``) or of a matrix (``matrix run``).

In pipeline order::

    line        ResultLine: one JSON line per iteration (results.jsonl), the report's input
    recipe      Recipe: one run's options, seeded per iteration, replayable from the seed
    executor    run iterations over --jobs worker processes, with progress and --until-fail
    summary     the end-of-run table: results by class, rates with Wilson intervals
"""
