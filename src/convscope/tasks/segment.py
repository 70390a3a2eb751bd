"""Fully supervised segmentation: per-pixel cross-entropy over the background and the C classes.

The upper bound of ``convscope bench weakseg``: the same body as the weakly supervised model, trained with the
masks it never sees. The model returns C + 1 class maps (channel 0: the background), upsampled bilinearly to the
masks' size for the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection

from convscope.engine.task import Task
from convscope.errors import UserError
from convscope.tasks.weakseg import class_maps


class SegmentTask(Task):
    """A batch is ``(images, labels, masks)`` with masks 0 (background) or c + 1 (class c)."""

    name = "segment"
    modality = "scene"
    rule = "argmax"
    measure = "masks"  # convscope.segment.segmentation.measure_run

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.num_outputs = num_classes + 1  # the background is a class here

    def _pixel_logits(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(batch) != 3:
            raise UserError("task 'segment' learns from pixel masks, and this data set has image labels only: "
                            "use a scene data set (fashion-scenes) or task 'weakseg'")  # fmt: skip
        x, _, masks = batch
        maps = class_maps(model, x).float()
        if maps.shape[-2:] != masks.shape[-2:]:
            maps = F.interpolate(maps, size=tuple(masks.shape[-2:]), mode="bilinear")
        return maps, masks

    def training_step(self, model: nn.Module, batch):
        maps, masks = self._pixel_logits(model, batch)
        return F.cross_entropy(maps, masks), {"pixel_accuracy": (maps.argmax(dim=1) == masks).float().mean()}

    def make_metrics(self, detailed: bool = False) -> MetricCollection:
        return MetricCollection({"loss": MeanMetric(), "pixel_accuracy": MeanMetric()}, compute_groups=False)

    def validation_step(self, model: nn.Module, batch, metrics: MetricCollection) -> None:
        maps, masks = self._pixel_logits(model, batch)
        metrics["loss"].update(F.cross_entropy(maps, masks, reduction="none").flatten(1).mean(dim=1))
        metrics["pixel_accuracy"].update((maps.argmax(dim=1) == masks).float().flatten(1).mean(dim=1))

    def batch_size(self, batch) -> int:
        return batch[0].shape[0]

    @torch.inference_mode()
    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Image level: each class's highest pixel probability."""
        return class_maps(model, x).float().softmax(dim=1)[:, 1:].amax(dim=(2, 3))
