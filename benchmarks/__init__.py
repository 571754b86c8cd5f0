"""fanout's benchmark suite: ``python -m benchmarks [--quick] [--scenario NAME ...] [--repeat N] [--real]``.

Every scenario runs its sides (ways of doing one workload) side by side in one run, against an
emulator in its own process with an injected per-API latency model, or against a real endpoint
with ``--real``. The report goes to ``benchmarks/results/RESULTS.md`` with PNG plots beside it.

One framework serves the suite and the standalone benchmarks (``python -m benchmarks.dispatch``,
``.tracking``, ``.emulator``, ``.memory``): ``_harness`` (statistics, repetitions, CPU and memory
accounting, the machine, pinning, Markdown and JSON reports) and ``scenarios`` (the emulator
target, the workloads, and each side's code). Benchmarks use fanout's public API and
``fanout.testing`` only; ``fanout run`` is run as the CLI, in a subprocess.
"""
