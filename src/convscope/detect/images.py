"""``convscope detect RUN_DIR IMAGE... --out DIR``: each image with its boxes drawn (class and score) and
``detections.json`` with the boxes in the pixels of the original files.

The model sees each image as training did (letterboxed or squashed to the run's image size); the boxes are then
mapped back to the file's own pixels, so a user can crop or count with them directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convscope.data.boxes import placement
from convscope.data.images import decode_image
from convscope.report.boxes import draw_boxes, to_pil
from convscope.run import LoadedRun, write_json, writing
from convscope.serve.inference import InferenceConfig, autocast, chunks, model_input

DETECTIONS_FILE = "detections.json"


def to_file_pixels(boxes: torch.Tensor, file_size: tuple[int, int], size: tuple[int, int], resize: str) -> torch.Tensor:
    """Boxes (K x 4 xyxy) in the model's input of ``size`` -> the pixels of the file (``file_size`` = H, W) that
    ``resize`` brought to it: the inverse of :func:`convscope.data.boxes.placement`, clamped to the file."""
    sx, sy, dx, dy = placement(file_size, size, resize)
    shift = torch.tensor([dx, dy, dx, dy])
    scale = torch.tensor([sx, sy, sx, sy])
    height, width = file_size
    limit = torch.tensor([width, height, width, height], dtype=torch.float32)
    return ((boxes.float() - shift) / scale).clamp(min=torch.zeros(4), max=limit)


def detections(run: LoadedRun, model: nn.Module, x: torch.Tensor, config: InferenceConfig) -> list[dict]:
    """The run's task's detections for the model-ready batch ``x``, in batches, on the CPU."""
    found: list[dict[str, torch.Tensor]] = []
    with torch.inference_mode(), autocast(run.device, config.precision):
        for part in chunks(x, config.batch_size):
            found += run.task.predict(model, model_input(part, config, run.device))
    return [{key: value.float().cpu() if key != "labels" else value.cpu() for key, value in d.items()} for d in found]


def detect_images(run: LoadedRun, model: nn.Module, images: Sequence[str], config: InferenceConfig) -> list[dict]:
    """Detect objects on ``images`` (files): per image ``{"image", "width", "height", "detections": [{"class",
    "score", "box"}]}``, each box [x0, y0, x1, y1] in the file's pixels, best score first."""
    size, resize = tuple(run.info["image_size"]), run.info["resize"]
    x = run.modality.load_inputs(run.recipe, run.info, list(images), torch.device("cpu"))
    results = []
    for path, detected in zip(images, detections(run, model, x, config), strict=True):
        height, width = _file_size(Path(path))
        boxes = to_file_pixels(detected["boxes"], (height, width), size, resize)
        results.append({
            "image": str(path),
            "width": width,
            "height": height,
            "detections": [
                {"class": run.classes[int(label)], "score": round(float(score), 4),
                 "box": [round(v, 1) for v in box.tolist()]}
                for box, score, label in zip(boxes, detected["scores"], detected["labels"], strict=True)
            ],
        })  # fmt: skip
    return results


def write_detections(run: LoadedRun, results: list[dict[str, Any]], out: Path) -> Path:
    """Each image of ``results`` with its boxes drawn (``out/NAME-boxes.png``, recorded as ``drawn``) and
    ``out/detections.json``; returns the JSON's path."""
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for result in results:
        found = result["detections"]
        drawn = {"boxes": torch.tensor([d["box"] for d in found]).reshape(-1, 4),
                 "scores": torch.tensor([d["score"] for d in found]),
                 "labels": torch.tensor([run.classes.index(d["class"]) for d in found], dtype=torch.int64)}  # fmt: skip
        path = out / _unique_name(Path(result["image"]).stem, used)
        with writing(path):
            to_pil(draw_boxes(decode_image(Path(result["image"]), 3), drawn, run.classes)).save(path)
        result["drawn"] = str(path)
    write_json(out / DETECTIONS_FILE, {"run": str(run.run_dir), "images": results})
    return out / DETECTIONS_FILE


def _file_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file as decoded (EXIF orientation applied, as for the model's input)."""
    height, width = decode_image(path, 3).shape[-2:]
    return height, width


def _unique_name(stem: str, used: set[str]) -> str:
    """``STEM-boxes.png``, numbered when two inputs share a name (a/cat.jpg and b/cat.jpg)."""
    name, number = f"{stem}-boxes.png", 1
    while name in used:
        number += 1
        name = f"{stem}-{number}-boxes.png"
    used.add(name)
    return name
