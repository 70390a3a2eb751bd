"""convscope against the bare loop, 2 epochs of a recipe per run, in the order given:

`python benchmarks/probes/engine_overhead.py fashion-mnist convscope bare convscope bare`
"""

import sys
import tempfile
from pathlib import Path

from convscope.speed_systems import run_system

recipe, systems = sys.argv[1], sys.argv[2:]
for system in systems:
    with tempfile.TemporaryDirectory() as d:
        r = run_system(system, recipe, {"train.epochs": "2"}, Path(d))
    print("RESULT", recipe, system, [row["seconds"] for row in r["curve"]], flush=True)
