"""fanout's benchmark suite: ``python -m benchmarks [--quick] [--scenario NAME ...] [--repeat N] [--real]``.

Every scenario runs its sides (ways of doing one workload) side by side in one run, against an
emulator in its own process with an injected per-API latency model, or against a real endpoint
with ``--real``. The report goes to ``benchmarks/results/RESULTS.md`` with PNG plots beside it.
"""
