"""Eager against torch.compile: train-step images/s (bf16 autocast, channels_last), one run.

`python benchmarks/probes/compile_probe.py fastnet-small 1 28 256` (model, channels, size, batch).
"""

import sys
import time

import torch
import torch.nn.functional as F

from convscope.models import create_model

name, c, s, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])


def rate(compiled: bool, steps=20):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, inputs={"in_channels": c, "image_size": (s, s)}).to(
        memory_format=torch.channels_last
    )
    step_model = torch.compile(model) if compiled else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch, c, s, s).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(step_model(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t = time.perf_counter()
    step()
    step()
    warm = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t), warm


e, ew = rate(False)
c_, cw = rate(True)
print(
    f"{name} {s}px batch {batch}: eager {e:.0f} img/s (warm-up {ew:.1f}s), "
    f"compiled {c_:.0f} img/s (warm-up {cw:.1f}s), ratio {c_ / e:.2f}"
)
