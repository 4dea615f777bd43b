"""Benchmarks: every phase the issues set a target for, measured as medians and spreads.

    guest    boot to kdump-ready, panic to capture (``kdump-harness bench boot|crash|run|audit``)
    swarm    hot-plug settle times: the reference burst and a large swarm (``bench swarm``)
    images   an image build from a warm package cache (``bench images``)
    vmcore   reading a big dump's headers, verifying many ranges (``bench vmcore``)
    stats    median, spread and the line each benchmark prints

Benchmarks report; they never fail a test run.  ``ci/bench-all.sh`` runs them all.
"""
