"""Benchmarks and doc studies of keras-dvq, outside the library.

`scripts/benchmark.py` runs the benchmark: one worker process per backend and
measurement (`run`), each timing a model against the PyTorch reference loop
(`reference`, `throughput`), a whole training run (`whole_fit`), memory and
host round-trips (`probes`), the input pipeline or codebook usage (`data`,
`usage`); `report` prints the table. `studies/` holds the scripts that
regenerate the tables and figures of docs/*.md.
"""
