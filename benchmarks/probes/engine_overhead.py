"""convscope against the bare loop, 2 Fashion-MNIST epochs per run, in the order given:

`python benchmarks/probes/engine_overhead.py convscope bare convscope bare`
"""

import sys
import tempfile
from pathlib import Path

from convscope.speed_systems import run_system

for system in sys.argv[1:]:
    with tempfile.TemporaryDirectory() as d:
        r = run_system(system, "fashion-mnist", {"train.epochs": "2"}, Path(d))
    print("RESULT", system, [row["seconds"] for row in r["curve"]], flush=True)
