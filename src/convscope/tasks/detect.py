"""Object detection (issue 20): seed 002's YOLO loss, and an anchor-free detector with task-aligned assignment.

A batch is ``(x, boxes, labels)``: images, N x M x 4 true boxes (xyxy pixels, end-exclusive) and N x M class
indices, -1 where an image has fewer than M boxes. Two losses, each for its model:

- ``loss = "yolov1"`` (model ``yolo-grid``): seed 002's sum, term by term. The image is cut into S x S cells;
  the cell that holds a box's centre is responsible for it, and of its B predicted boxes the one with the highest
  IoU with the truth. lambda_coord times the squared errors of x, y (in the cell), sqrt(w), sqrt(h) (of the
  image) of that box; lambda_obj times the squared error between its confidence and that IoU (detached);
  lambda_noobj times the squared confidence of every other box; lambda_classes times the squared error of the
  cell's C class scores against the one-hot class. The sum over the batch is divided by its size (darknet's
  normalisation). The seed assumes one object per cell: when two box centres fall in one cell the largest box
  is kept and the others are dropped from the loss (:func:`grid_targets` counts them).
- ``loss = "aligned"`` (model ``fastdet``): YOLOv8's recipe. Each true box takes the ``topk`` locations inside
  it that best align score and IoU (``score**alpha * IoU**beta``, TOOD's task-aligned assigner), a location
  claimed by two boxes going to the one it overlaps most; the class scores are trained by binary cross-entropy
  towards IoU-aware targets (the alignment normalised so that each box's best location aims at its best IoU, 0
  for the background) and the boxes of the positive locations by the GIoU loss (torchvision).

``predict`` decodes boxes, drops those under ``score_threshold`` and suppresses overlaps per class by
``torchvision.ops.batched_nms`` at ``iou_threshold``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchvision.ops import batched_nms, generalized_box_iou_loss

from convscope.engine.task import Task
from convscope.errors import UserError
from convscope.metrics.detection import DetectionConfusion, MeanAP

LOSSES = {"yolov1": "yolo-grid", "aligned": "fastdet"}  # each loss and the model whose outputs it reads
PRE_NMS = 1000  # candidates per image kept for NMS, by score


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of each box of ``a`` with the box at the same index of ``b`` (xyxy, broadcast): the diagonal of
    ``torchvision.ops.box_iou`` without the all-pairs matrix."""
    width = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    height = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = width * height
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    return inter / (area_a + area_b - inter).clamp(min=1e-9)


# ---- seed 002's YOLO -----------------------------------------------------------------------------------------


def grid_targets(
    boxes: torch.Tensor, labels: torch.Tensor, image_size: tuple[int, int], grid: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The S x S targets of a batch: ``(obj N x S*S bool, box N x S*S x 4 as x, y in the cell and w, h of the
    image, class N x S*S, dropped)``. When centres share a cell the largest box is the cell's object (ties: the
    first); ``dropped`` counts the others."""
    n = labels.shape[0]
    height, width = image_size
    valid = labels >= 0
    cx = (boxes[..., 0] + boxes[..., 2]) / 2 / width * grid
    cy = (boxes[..., 1] + boxes[..., 3]) / 2 / height * grid
    col, row = cx.floor().clamp(0, grid - 1), cy.floor().clamp(0, grid - 1)
    cell = (row * grid + col).long() + torch.arange(n, device=labels.device)[:, None] * grid * grid
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    # Largest first, then stable by cell: the first box of each cell's run is its largest.
    flat_cell, flat_area = cell[valid], area[valid]
    order = flat_area.argsort(descending=True, stable=True)
    order = order[flat_cell[order].argsort(stable=True)]
    sorted_cells = flat_cell[order]
    first = torch.ones_like(sorted_cells, dtype=torch.bool)
    first[1:] = sorted_cells[1:] != sorted_cells[:-1]
    kept = order[first]
    xywh = torch.stack([cx - col, cy - row, (boxes[..., 2] - boxes[..., 0]) / width,
                        (boxes[..., 3] - boxes[..., 1]) / height], dim=-1)[valid][kept]  # fmt: skip
    obj = torch.zeros(n * grid * grid, dtype=torch.bool, device=labels.device)
    target = torch.zeros(n * grid * grid, 4, device=boxes.device)
    classes = torch.zeros(n * grid * grid, dtype=torch.long, device=labels.device)
    obj[flat_cell[kept]] = True
    target[flat_cell[kept]] = xywh.float()
    classes[flat_cell[kept]] = labels[valid][kept]
    dropped = int(valid.sum()) - len(kept)
    return obj.view(n, -1), target.view(n, -1, 4), classes.view(n, -1), dropped


def _cell_boxes(xywh: torch.Tensor, grid: int) -> torch.Tensor:
    """x, y in the cell and w, h of the image (N x S*S x ... x 4) -> xyxy in image units [0, 1]."""
    cells = torch.arange(grid * grid, device=xywh.device)
    col = (cells % grid).view(1, -1, *([1] * (xywh.dim() - 3))).to(xywh.dtype)
    row = (cells // grid).view(1, -1, *([1] * (xywh.dim() - 3))).to(xywh.dtype)
    cx, cy = (col + xywh[..., 0]) / grid, (row + xywh[..., 1]) / grid
    half_w, half_h = xywh[..., 2] / 2, xywh[..., 3] / 2
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)


def split_grid(raw: torch.Tensor, boxes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw N x S x S x (B*5 + C) -> (x, y, sqrt w, sqrt h N x S*S x B x 4, confidence N x S*S x B, class scores
    N x S*S x C), each squashed into [0, 1] by a sigmoid."""
    n = raw.shape[0]
    values = raw.float().sigmoid().view(n, -1, raw.shape[-1])
    per_box = values[..., : boxes * 5].view(n, -1, boxes, 5)
    return per_box[..., :4], per_box[..., 4], values[..., boxes * 5 :]


def yolov1_loss(
    raw: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    image_size: tuple[int, int],
    num_boxes: int,
    lambdas: dict[str, float],
) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """Seed 002's loss on a grid model's raw outputs (see the module's docstring): ``(loss, its four terms, the
    boxes dropped because their centre shares a cell with a larger one)``."""
    pred_box, confidence, class_scores = split_grid(raw, num_boxes)
    grid = raw.shape[1]
    obj, target, classes, dropped = grid_targets(boxes, labels, image_size, grid)
    # Predicted boxes as (x, y, w, h): the model gives sqrt(w), sqrt(h).
    xywh = torch.cat([pred_box[..., :2], pred_box[..., 2:].square()], dim=-1)
    iou = paired_iou(_cell_boxes(xywh, grid), _cell_boxes(target, grid).unsqueeze(2))  # N x S*S x B
    # The responsible box: the highest IoU of the cell's B (the first on ties, as argmax).
    responsible = F.one_hot(iou.argmax(dim=-1), num_boxes).bool() & obj.unsqueeze(-1)
    truth = torch.cat([target[..., :2], target[..., 2:].sqrt()], dim=-1).unsqueeze(2)
    coord = ((pred_box - truth).square().sum(-1) * responsible).sum()
    objectness = ((iou.detach() - confidence).square() * responsible).sum()
    no_object = (confidence.square() * ~responsible).sum()
    one_hot = F.one_hot(classes, class_scores.shape[-1]).to(class_scores.dtype)
    class_error = ((one_hot - class_scores).square().sum(-1) * obj).sum()
    n = raw.shape[0]
    terms = {
        "coord": lambdas["coord"] * coord / n,
        "obj": lambdas["obj"] * objectness / n,
        "noobj": lambdas["noobj"] * no_object / n,
        "classes": lambdas["classes"] * class_error / n,
    }
    return torch.stack(list(terms.values())).sum(), terms, dropped


def decode_grid(raw: torch.Tensor, num_boxes: int, image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (box, class) of a grid as a candidate: ``(boxes N x S*S*B x 4 xyxy pixels, scores N x S*S*B x C)``,
    the score being YOLO's class-specific confidence, confidence x class score."""
    pred_box, confidence, class_scores = split_grid(raw, num_boxes)
    xywh = torch.cat([pred_box[..., :2], pred_box[..., 2:].square()], dim=-1)
    height, width = image_size
    scale = torch.tensor([width, height, width, height], dtype=xywh.dtype, device=xywh.device)
    boxes = _cell_boxes(xywh, raw.shape[1]) * scale
    scores = confidence.unsqueeze(-1) * class_scores.unsqueeze(2)  # N x S*S x B x C
    n = raw.shape[0]
    return boxes.reshape(n, -1, 4), scores.reshape(n, -1, class_scores.shape[-1])


# ---- the anchor-free detector ---------------------------------------------------------------------------------


def location_centres(height: int, width: int, stride: int, device: torch.device) -> torch.Tensor:
    """The centres (x, y pixels) of an h x w map's locations, row by row: A x 2."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return (torch.stack([xs, ys], dim=-1).view(-1, 2).float() + 0.5) * stride


def decode_locations(raw: torch.Tensor, stride: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw N x h x w x (C + 4K) -> ``(logits N x A x C, boxes N x A x K x 4 xyxy pixels)``: each location's
    distances to the box's sides are ``softplus(raw) * stride``, positive without a clamp."""
    n, height, width, _ = raw.shape
    raw = raw.float().reshape(n, height * width, -1)
    logits, distances = raw[..., :num_classes], F.softplus(raw[..., num_classes:]) * stride
    distances = distances.view(n, height * width, -1, 4)
    centres = location_centres(height, width, stride, raw.device).view(1, -1, 1, 2)
    boxes = torch.cat([centres - distances[..., :2], centres + distances[..., 2:]], dim=-1)
    return logits, boxes


def _box_per_pair(boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """For each true box m and location a, the predicted box that answers for m's class: N x M x A x 4."""
    n = boxes.shape[0]
    k = labels.clamp(min=0) if boxes.shape[2] > 1 else torch.zeros_like(labels)
    return boxes.permute(0, 2, 1, 3)[torch.arange(n, device=boxes.device)[:, None], k]


def assign(
    scores: torch.Tensor,
    boxes: torch.Tensor,
    centres: torch.Tensor,
    true_boxes: torch.Tensor,
    labels: torch.Tensor,
    *,
    topk: int,
    alpha: float,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TOOD's task-aligned assignment: ``(positive N x A bool, matched true box N x A, target score N x A)``.

    ``scores`` N x A x C (probabilities), ``boxes`` N x A x K x 4, ``centres`` A x 2, ``true_boxes`` N x M x 4,
    ``labels`` N x M (-1 padding)."""
    n, m = labels.shape
    batch = torch.arange(n, device=labels.device)[:, None]
    valid = labels >= 0
    x, y = centres[:, 0].view(1, 1, -1), centres[:, 1].view(1, 1, -1)
    tb = true_boxes.unsqueeze(-1)  # N x M x 4 x 1
    inside = (x > tb[:, :, 0]) & (x < tb[:, :, 2]) & (y > tb[:, :, 1]) & (y < tb[:, :, 3]) & valid.unsqueeze(-1)
    iou = paired_iou(_box_per_pair(boxes, labels), true_boxes.unsqueeze(2)).clamp(min=0) * inside  # N x M x A
    class_score = scores.permute(0, 2, 1)[batch, labels.clamp(min=0)]  # N x M x A
    alignment = class_score.pow(alpha) * iou.pow(beta) * inside
    # A box smaller than a stride holds no location centre: it takes the location nearest its centre instead.
    k = min(topk, alignment.shape[-1])
    chosen = torch.zeros_like(inside)
    chosen.scatter_(-1, alignment.topk(k, dim=-1).indices, True)
    candidates = chosen & inside
    lonely = valid & ~candidates.any(-1)
    if bool(lonely.any()):
        box_centre = (true_boxes[..., :2] + true_boxes[..., 2:]) / 2
        nearest = (centres.view(1, 1, -1, 2) - box_centre.unsqueeze(2)).square().sum(-1).argmin(-1)
        candidates[(*lonely.nonzero(as_tuple=True), nearest[lonely])] = True
        iou = torch.where(candidates, paired_iou(_box_per_pair(boxes, labels), true_boxes.unsqueeze(2)), iou)
        alignment = torch.where(candidates, class_score.pow(alpha) * iou.pow(beta), alignment)
    # A location claimed by two boxes goes to the one it overlaps most.
    claims = candidates.sum(1)  # N x A
    best = iou.masked_fill(~candidates, -1).argmax(1)  # N x A
    positive = claims > 0
    one = F.one_hot(best, m).permute(0, 2, 1).bool() & candidates  # N x M x A
    alignment = alignment * one
    iou = iou * one
    # Each box's best location aims at that box's best IoU; the others in proportion to their alignment.
    peak = alignment.amax(-1, keepdim=True)
    norm = torch.where(peak > 0, alignment / peak.clamp(min=torch.finfo(peak.dtype).tiny), 0) * iou.amax(
        -1, keepdim=True
    )
    target_score = norm.amax(1)
    return positive, best, target_score


def aligned_loss(
    raw: torch.Tensor,
    true_boxes: torch.Tensor,
    labels: torch.Tensor,
    *,
    stride: int,
    num_classes: int,
    topk: int,
    alpha: float,
    beta: float,
    box_weight: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The anchor-free loss (see the module's docstring): ``(loss, {"classes": ..., "box": ...})``: the class
    term's sum divided by the sum of the target scores (YOLOv8's normalisation), the box term's by the number of
    positive locations."""
    logits, boxes = decode_locations(raw, stride, num_classes)
    n, height, width, _ = raw.shape
    centres = location_centres(height, width, stride, raw.device)
    with torch.no_grad():
        positive, matched, target_score = assign(logits.sigmoid(), boxes, centres, true_boxes.float(), labels,
                                                 topk=topk, alpha=alpha, beta=beta)  # fmt: skip
    batch = torch.arange(n, device=raw.device)[:, None]
    matched_label = labels[batch, matched].clamp(min=0)  # N x A
    targets = F.one_hot(matched_label, num_classes).float() * (target_score * positive).unsqueeze(-1)
    total = targets.sum().clamp(min=1.0)
    classes = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / total
    k = matched_label if boxes.shape[2] > 1 else torch.zeros_like(matched_label)
    chosen = boxes[batch, torch.arange(boxes.shape[1], device=raw.device), k]  # N x A x 4
    truth = true_boxes.float()[batch, matched]
    # Every positive location's box counts alike, not weighted by its IoU-aware target as in YOLOv8: a box that
    # misses its truth entirely (IoU 0, the start of training) would get no gradient; GIoU's gives one.
    giou = generalized_box_iou_loss(chosen[positive], truth[positive], reduction="sum")
    box = box_weight * giou / positive.sum().clamp(min=1)
    return classes + box, {"classes": classes, "box": box}


def decode_detector(raw: torch.Tensor, stride: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (location, class) as a candidate: ``(boxes N x A x K x 4 pixels, scores N x A x C)``."""
    logits, boxes = decode_locations(raw, stride, num_classes)
    return boxes, logits.sigmoid()


def select(
    boxes: torch.Tensor, scores: torch.Tensor, score_threshold: float, iou_threshold: float, max_detections: int
) -> list[dict[str, torch.Tensor]]:
    """Per image: candidates ``boxes`` (A x K x 4, K = 1 shared by the classes or K = C) with ``scores``
    (A x C) -> torchmetrics' dicts after the score threshold and per-class NMS, best first."""
    out = []
    for image_boxes, image_scores in zip(boxes, scores, strict=True):
        flat = image_scores.flatten()
        keep = (flat > score_threshold).nonzero().squeeze(1)
        keep = keep[flat[keep].argsort(descending=True)[:PRE_NMS]]
        location, label = keep // image_scores.shape[1], keep % image_scores.shape[1]
        candidate = image_boxes[location, label if image_boxes.shape[1] > 1 else 0]
        survivors = batched_nms(candidate, flat[keep], label, iou_threshold)[:max_detections]
        out.append({"boxes": candidate[survivors], "scores": flat[keep][survivors], "labels": label[survivors]})
    return out


def truth(boxes: torch.Tensor, labels: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """A batch's padded true boxes as torchmetrics' per-image dicts."""
    return [{"boxes": b[c >= 0].float(), "labels": c[c >= 0]} for b, c in zip(boxes, labels, strict=True)]


class DetectTask(Task):
    """A batch is ``(x, boxes, labels)``; the model is ``yolo-grid`` for ``loss = "yolov1"`` and ``fastdet``
    for ``loss = "aligned"``.

    Options: the seed's ``lambda_coord`` (5), ``lambda_obj`` (1), ``lambda_noobj`` (0.5), ``lambda_classes``
    (1); the aligned loss's ``topk``, ``alpha``, ``beta`` (TOOD's, YOLOv8's values) and ``box_weight``;
    prediction's ``score_threshold``, ``iou_threshold`` (NMS, not the IoU of mAP) and ``max_detections``.
    """

    name = "detect"
    modality = "boxes"
    # Validation ranks epochs by mAP@[.5:.95]: a recipe sets train.monitor = "map50_95" (accuracy, the
    # config's default, is not a detection metric); the api may read these when the recipe leaves the default.
    monitor = "map50_95"
    monitor_mode = "max"

    def __init__(
        self,
        num_classes: int,
        loss: str = "aligned",
        lambda_coord: float = 5.0,
        lambda_obj: float = 1.0,
        lambda_noobj: float = 0.5,
        lambda_classes: float = 1.0,
        topk: int = 10,
        alpha: float = 0.5,
        beta: float = 6.0,
        box_weight: float = 2.0,
        score_threshold: float = 0.01,
        iou_threshold: float = 0.6,
        max_detections: int = 100,
    ) -> None:
        if loss not in LOSSES:
            raise UserError(f"task.loss = {loss!r} is not one of: {', '.join(LOSSES)}")
        if not 0 <= score_threshold < 1:
            raise UserError(f"task.score_threshold = {score_threshold!r}: expected a number in [0, 1)")
        if not 0 < iou_threshold <= 1:
            raise UserError(f"task.iou_threshold = {iou_threshold!r}: expected a number in (0, 1]")
        for key, value in (("topk", topk), ("max_detections", max_detections)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"task.{key} = {value!r}: expected a positive integer")
        self.num_classes = num_classes
        self.loss = loss
        self.lambdas = {"coord": lambda_coord, "obj": lambda_obj, "noobj": lambda_noobj, "classes": lambda_classes}
        self.topk, self.alpha, self.beta, self.box_weight = topk, alpha, beta, box_weight
        self.score_threshold, self.iou_threshold, self.max_detections = score_threshold, iou_threshold, max_detections

    def _check_model(self, model: nn.Module) -> nn.Module:
        inner = getattr(model, "module", model)  # DistributedDataParallel
        expected = LOSSES[self.loss]
        if (self.loss == "yolov1") != hasattr(inner, "grid") or not hasattr(inner, "num_classes"):
            raise UserError(f"task.loss = {self.loss!r} reads the outputs of model {expected!r}; "
                            f"set model.name = {expected!r} or another task.loss")  # fmt: skip
        return inner

    def compute_loss(self, model: nn.Module, raw: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                     image_size: tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        inner = self._check_model(model)
        if self.loss == "yolov1":
            loss, terms, _ = yolov1_loss(raw, boxes, labels, image_size, inner.boxes, self.lambdas)
            return loss, terms
        return aligned_loss(raw, boxes, labels, stride=inner.stride, num_classes=self.num_classes, topk=self.topk,
                            alpha=self.alpha, beta=self.beta, box_weight=self.box_weight)  # fmt: skip

    def training_step(self, model: nn.Module, batch):
        x, boxes, labels = _unpack(batch)
        loss, terms = self.compute_loss(model, model(x), boxes, labels, tuple(x.shape[-2:]))
        return loss, {f"loss_{k}": v for k, v in terms.items()}

    def make_metrics(self, detailed: bool = False) -> MetricCollection:
        """Validation: ``loss``, ``map50`` and ``map50_95`` (scalars; one COCO evaluation gives both).
        ``detailed`` (``convscope evaluate``) adds map75, per-class AP, the precision tensor and the detection
        confusion matrix: :func:`convscope.metrics.detection.summarize` turns them into eval.json."""
        metrics: dict[str, Any] = {"loss": MeanMetric(), "map50_95": MeanAP(detailed)}
        if detailed:
            metrics["confusion_matrix"] = DetectionConfusion(self.num_classes)
        return MetricCollection(metrics, compute_groups=False)

    def validation_step(self, model: nn.Module, batch, metrics: MetricCollection) -> None:
        x, boxes, labels = _unpack(batch)
        raw = model(x)
        loss, _ = self.compute_loss(model, raw, boxes, labels, tuple(x.shape[-2:]))
        metrics["loss"].update(loss, weight=x.shape[0])
        preds, target = self.decode(model, raw, tuple(x.shape[-2:])), truth(boxes, labels)
        for key, metric in metrics.items():
            if key != "loss":
                metric.update(preds, target)

    def batch_size(self, batch) -> int:
        return batch[0].shape[0]

    def decode(self, model: nn.Module, raw: torch.Tensor, image_size: tuple[int, int]) -> list[dict[str, torch.Tensor]]:
        """Raw outputs -> per image ``{"boxes", "scores", "labels"}`` (torchmetrics' format, xyxy pixels)."""
        inner = self._check_model(model)
        if self.loss == "yolov1":
            boxes, scores = decode_grid(raw, inner.boxes, image_size)
            boxes = boxes.unsqueeze(2)
        else:
            boxes, scores = decode_detector(raw, inner.stride, self.num_classes)
        height, width = image_size
        boxes = torch.stack([boxes[..., 0].clamp(0, width), boxes[..., 1].clamp(0, height),
                             boxes[..., 2].clamp(0, width), boxes[..., 3].clamp(0, height)], dim=-1)  # fmt: skip
        return select(boxes, scores, self.score_threshold, self.iou_threshold, self.max_detections)

    @torch.inference_mode()
    def predict(self, model: nn.Module, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per image the detections: ``boxes`` K x 4 (xyxy pixels of ``x``), ``scores`` K, ``labels`` K."""
        return self.decode(model, model(x), tuple(x.shape[-2:]))

    def data_notes(self, model: nn.Module, data: Any) -> dict[str, Any]:
        """``boxes_in_shared_cells``: the training boxes the seed's one-object-per-cell rule leaves unlearnt
        (a grid model only)."""
        train = data.train
        dropped = self.cells_with_two_centres(model, train.boxes, train.labels, train.image_size)
        return {} if dropped is None else {"boxes_in_shared_cells": int(dropped)}

    def cells_with_two_centres(self, model: nn.Module, boxes: torch.Tensor, labels: torch.Tensor,
                               image_size: tuple[int, int]) -> int | None:  # fmt: skip
        """How many true boxes the seed's one-object-per-cell rule drops from ``boxes`` / ``labels`` (a data
        set's padded tensors) on ``model``'s grid; None for a model without a grid."""
        inner = getattr(model, "module", model)
        if not hasattr(inner, "grid"):
            return None
        return grid_targets(boxes, labels, image_size, inner.grid)[3]


def _unpack(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if len(batch) != 3:
        raise UserError("task 'detect' learns from boxes: use a boxes data set (fashion-scenes, yolo:PATH, "
                        "coco:PATH)")  # fmt: skip
    return batch
