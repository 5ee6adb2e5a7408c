"""Side-by-side benchmarks of just_distribute and its peers.

``python -m benchmarks`` runs every scenario (S1-S8 of the performance issue) with each
library in one process, a warm-up and several counted runs, and writes
``docs/performance.md`` and ``docs/img/performance.png``. ``python -m benchmarks --smoke``
runs tiny sizes once, into a temporary directory, to prove that the benchmark still runs;
it asserts nothing about speed.
"""
