"""convscope against the bare loop, 2 epochs of a recipe per run, in the order given:

`python benchmarks/probes/engine_overhead.py fashion-mnist convscope bare convscope bare`

Prints per run the wall seconds of each epoch and the CPU seconds of the whole run (all threads of this process,
setup and evaluation included): on a shared machine the wall time drifts with the neighbours' load, the CPU time
this process spent much less.
"""

import sys
import tempfile
import time
from pathlib import Path

from convscope.bench.speed_systems import run_system

recipe, systems = sys.argv[1], sys.argv[2:]
for system in systems:
    with tempfile.TemporaryDirectory() as d:
        cpu, wall = time.process_time(), time.perf_counter()
        r = run_system(system, recipe, {"train.epochs": "2"}, Path(d))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print("RESULT", recipe, system, [row["seconds"] for row in r["curve"]], f"cpu {cpu:.1f} s wall {wall:.1f} s",
          flush=True)  # fmt: skip
