"""Boxes drawn on images (torchvision's ``draw_bounding_boxes``): the pictures of ``convscope detect`` and of a
detection run's report, and the report's detection sections.

Small images are enlarged before drawing (nearest neighbour, so pixels stay visible) until their shorter side
reaches :data:`MIN_DRAWN_SIDE`: on a 64 x 64 scene a label's text would otherwise cover the object.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from matplotlib import font_manager
from PIL import Image
from torchvision.utils import draw_bounding_boxes

from convscope.explain import figures
from convscope.report import page

if TYPE_CHECKING:
    from convscope.run import LoadedRun

MIN_DRAWN_SIDE = 256
# Colours by class index (matplotlib's tab10), so the same class has the same colour on every image.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]  # fmt: skip
TRUTH_COLOUR = "#ffffff"
SCENES_SHOWN = 8
# Boxes a person is shown: scores from 0.25 (Ultralytics' default confidence). mAP is measured on all of them.
DISPLAY_SCORE = 0.25


FONT_SIZE = 12


@functools.cache
def _font() -> str:
    """A TrueType font for the labels: matplotlib's DejaVu Sans, there wherever convscope is (PIL's built-in
    bitmap font is too small to read)."""
    return font_manager.findfont("DejaVu Sans")


def colour(label: int) -> str:
    return PALETTE[label % len(PALETTE)]


def enlarged(image: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``image`` (uint8 C x H x W, 1 or 3 channels) as RGB, enlarged by a whole factor when small; and the factor."""
    rgb = image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3]
    factor = max(1, -(-MIN_DRAWN_SIDE // min(image.shape[-2:])))
    if factor > 1:
        rgb = F.interpolate(rgb[None].float(), scale_factor=factor, mode="nearest")[0].to(torch.uint8)
    return rgb.contiguous(), float(factor)


def draw_boxes(
    image: torch.Tensor,
    detections: dict[str, torch.Tensor],
    classes: Sequence[str],
    truth: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``image`` (uint8 C x H x W) with each detection's box, class and score (colour by class) and, when given,
    the true boxes in white underneath; uint8 3 x H' x W' (enlarged when small)."""
    drawn, factor = enlarged(image)
    if truth is not None and len(truth["boxes"]):
        drawn = draw_bounding_boxes(drawn, truth["boxes"].float() * factor, colors=TRUTH_COLOUR, width=1)
    boxes = detections["boxes"].float() * factor
    if len(boxes):
        labels = [int(label) for label in detections["labels"]]
        names = [f"{classes[label]} {score:.2f}" for label, score in zip(labels, detections["scores"].tolist(),
                                                                           strict=True)]  # fmt: skip
        drawn = draw_bounding_boxes(drawn, boxes, labels=names, colors=[colour(label) for label in labels], width=2,
                                    font=_font(), font_size=FONT_SIZE)  # fmt: skip
    return drawn


def to_pil(image: torch.Tensor) -> Image.Image:
    """uint8 3 x H x W -> a PIL image."""
    return Image.fromarray(image.permute(1, 2, 0).cpu().numpy())


def png_bytes(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return buffer.getvalue()


def detection_metrics(evaluation: dict[str, Any]) -> str:
    """The report's test metrics of a detection run (``eval.json`` as :func:`convscope.api.evaluate` writes it)."""
    scalars = [("mAP@0.5", evaluation["map50"]), ("mAP@[.5:.95]", evaluation["map50_95"]),
               ("mAP@0.75", evaluation["map75"]), ("loss", evaluation["loss"])]  # fmt: skip
    per_class = [(name, values["ap50"], values["ap50_95"]) for name, values in evaluation["per_class_ap"].items()]
    return page.section(
        "Test metrics",
        page.text(f"{evaluation['images']} test images of {evaluation['data']}, {evaluation['boxes']} true boxes."),
        page.table(["metric", "value"], scalars),
        page.table(["class", "AP@0.5", "AP@[.5:.95]"], per_class),
    )


@torch.no_grad()
def detected_scenes(run: LoadedRun) -> str:
    """The first test images with their predicted boxes (colour, class, score) over the true ones (white)."""
    loader = run.modality.prepare(run.recipe).loaders(run.recipe, run.device)["test"]
    x, boxes, labels = next(iter(loader))
    x, boxes, labels = x[:SCENES_SHOWN], boxes[:SCENES_SHOWN], labels[:SCENES_SHOWN]
    predictions = run.task.predict(run.model, x)
    images = (figures.denormalize(x.float().cpu(), run.info["mean"], run.info["std"]) * 255).round().to(torch.uint8)
    parts = []
    for image, prediction, box, label in zip(images, predictions, boxes, labels, strict=True):
        kept = prediction["scores"] >= DISPLAY_SCORE
        shown = {key: value[kept].cpu() for key, value in prediction.items()}
        truth = {"boxes": box[label >= 0].cpu(), "labels": label[label >= 0].cpu()}
        drawn = draw_boxes(image, shown, run.classes, truth)
        parts.append(page.image(png_bytes(drawn), "test image with predicted and true boxes"))
    note = (f"predicted boxes with score {DISPLAY_SCORE} or more, in the colour of their class; "
            "true boxes in white")  # fmt: skip
    return page.section("Test images", page.text(note), page.gallery(*parts))
