"""Test accuracy of a trained image run with no test-time augmentation, with flips (`[task] tta = "flip"`), and with
airbench94's flips and one-pixel translations (its TTA level 2: the image and its mirror weigh 1/4 each, the two
translated pairs 1/8 each):

`python benchmarks/probes/tta_views.py RUN_DIR`
"""

import sys

import torch
import torch.nn.functional as F

from convscope import api


def weighted_views(x: torch.Tensor) -> list[tuple[torch.Tensor, float]]:
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    h, w = x.shape[-2:]
    up_left, down_right = padded[..., :h, :w], padded[..., 2:, 2:]
    return [(x, 1 / 4), (x.flip(-1), 1 / 4), (up_left, 1 / 8), (up_left.flip(-1), 1 / 8),
            (down_right, 1 / 8), (down_right.flip(-1), 1 / 8)]  # fmt: skip


run = api.load_run(sys.argv[1], device="cpu")
test = run.modality.prepare(run.recipe).loaders(run.recipe, torch.device("cpu"))["test"]
model = run.model.eval().to(memory_format=torch.channels_last)
correct = {"none": 0, "flip": 0, "flip+translate": 0}
seen = 0
with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
    for x, y in test:
        probs = [(model(view).float().softmax(1), weight) for view, weight in weighted_views(x)]
        correct["none"] += int((probs[0][0].argmax(1) == y).sum())
        correct["flip"] += int(((probs[0][0] + probs[1][0]).argmax(1) == y).sum())
        correct["flip+translate"] += int((sum(p * weight for p, weight in probs).argmax(1) == y).sum())
        seen += len(y)
print("RESULT", {name: round(count / seen, 4) for name, count in correct.items()})
