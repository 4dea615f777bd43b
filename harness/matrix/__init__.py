"""The nightly matrix: a TOML definition expanded into cells, sharded over machines, run
through the campaign executor (``kdump-harness matrix list|run``).

In pipeline order::

    model        the vocabulary: dimensions, shape traits, confidence, frozen rule types
    argv         a cell's run options, parsed (and pre-flighted) by ``run``'s own parser
    definition   load and validate ci/matrix.toml (a bad file names file and key)
    expand       cells from the groups, exclusions with reasons, expected results, --select
    shard        --shard i/N: deterministic, cost-balanced, every iteration in one shard
    plan         what one invocation runs: selection, shard, host skips, campaign id, tasks
"""
