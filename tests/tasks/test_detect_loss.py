"""The detect task: seed 002's YOLO loss term by term on hand-made grids, the aligned loss, decoding and NMS."""

import math

import pytest
import torch
from torchvision.ops import box_iou

from convscope.errors import UserError
from convscope.models.detect import fastdet, yolo_grid
from convscope.tasks import TASKS
from convscope.tasks.detect import DetectTask, assign, grid_targets, location_centres, paired_iou, select, yolov1_loss

LAMBDAS = {"coord": 5.0, "obj": 1.0, "noobj": 0.5, "classes": 1.0}


def logit(values: list[float]) -> torch.Tensor:
    v = torch.tensor(values, dtype=torch.float64)
    return (v / (1 - v)).log().float()


def grid_raw(cells: dict[int, list[float]], grid: int = 2, background: list[float] | None = None) -> torch.Tensor:
    """Raw 1 x S x S x (2 * 5 + 2) outputs whose sigmoids are the given values (cell index -> 12 values)."""
    default = background or [0.5, 0.5, 0.5, 0.5, 0.1] * 2 + [0.5, 0.5]
    rows = [logit(cells.get(i, default)) for i in range(grid * grid)]
    return torch.stack(rows).view(1, grid, grid, -1)


def test_paired_iou_is_the_diagonal_of_box_iou():
    a = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 25], [0, 0, 1, 1]])
    b = torch.tensor([[5.0, 5, 15, 15], [5, 5, 15, 25], [2, 2, 3, 3]])
    assert torch.allclose(paired_iou(a, b), box_iou(a, b).diagonal())


def test_yolov1_loss_every_term_on_a_hand_made_grid():
    # One 16 x 32 box centred at (12, 24) of a 64 x 64 image: cell (0, 0) of a 2 x 2 grid, x = 0.375, y = 0.75.
    boxes, labels = torch.tensor([[[4.0, 8, 20, 40]]]), torch.tensor([[0]])
    # Box 0: a 16 x 16 box at the cell's centre (IoU 1/3); box 1: the right centre and width, sqrt(h) 0.6
    # instead of sqrt(0.5) (IoU 0.72): box 1 is responsible. Every other cell: confidences 0.1.
    cell = [0.5, 0.5, 0.5, 0.5, 0.3, 0.375, 0.75, 0.5, 0.6, 0.8, 0.9, 0.2]
    loss, terms, dropped = yolov1_loss(grid_raw({0: cell}), boxes, labels, (64, 64), 2, LAMBDAS)
    expected = {
        "coord": 5 * (math.sqrt(0.5) - 0.6) ** 2,
        "obj": (0.72 - 0.8) ** 2,  # the confidence regressed to the responsible box's IoU
        "noobj": 0.5 * (0.3**2 + 6 * 0.1**2),  # box 0 of the object's cell and both boxes of the 3 empty cells
        "classes": (1 - 0.9) ** 2 + 0.2**2,
    }
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value, rel=1e-4), name
    assert loss.item() == pytest.approx(sum(expected.values()), rel=1e-4)
    assert dropped == 0


def test_yolov1_loss_of_an_empty_image_is_the_no_object_term_only():
    raw = grid_raw({}, background=[0.2, 0.7, 0.4, 0.9, 0.3] * 2 + [0.6, 0.1])
    boxes, labels = torch.zeros(1, 1, 4), torch.full((1, 1), -1)
    loss, terms, _ = yolov1_loss(raw, boxes, labels, (64, 64), 2, LAMBDAS)
    assert loss.item() == pytest.approx(0.5 * 8 * 0.3**2, rel=1e-5)
    assert terms["coord"].item() == terms["obj"].item() == terms["classes"].item() == 0


def test_yolov1_loss_is_finite_on_negative_raw_outputs():
    raw = torch.full((2, 4, 4, 2 * 5 + 3), -80.0, requires_grad=True)
    boxes = torch.tensor([[[0.0, 0, 30, 30], [30, 30, 64, 64]], [[10, 10, 20, 50], [0, 0, 0, 0]]])
    labels = torch.tensor([[0, 2], [1, -1]])
    loss, _, _ = yolov1_loss(raw, boxes, labels, (64, 64), 2, LAMBDAS)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(raw.grad).all()


def test_two_centres_in_one_cell_keep_the_largest_and_are_counted():
    boxes = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 20, 20], [40, 40, 60, 60]]])
    labels = torch.tensor([[3, 5, 1]])
    obj, target, classes, dropped = grid_targets(boxes, labels, (64, 64), 2)
    assert dropped == 1
    assert obj.tolist() == [[True, False, False, True]]
    assert classes[0, 0].item() == 5  # the 20 x 20 box, not the 10 x 10 one
    assert target[0, 0].tolist() == pytest.approx([10 / 32, 10 / 32, 20 / 64, 20 / 64])


def test_the_task_counts_the_shared_cells_on_the_models_grid():
    task = DetectTask(10, loss="yolov1")
    boxes = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 20, 20]]])
    labels = torch.tensor([[3, 5]])
    assert task.cells_with_two_centres(yolo_grid(10, 1, (64, 64), grid=2), boxes, labels, (64, 64)) == 1
    assert task.cells_with_two_centres(fastdet(10, 1, (64, 64)), boxes, labels, (64, 64)) is None


def test_assignment_picks_locations_inside_each_box_and_the_overlap_breaks_ties():
    centres = location_centres(4, 4, 8, torch.device("cpu"))  # a 32 x 32 image, centres 4, 12, 20, 28
    true_boxes = torch.tensor([[[0.0, 0, 16, 16], [8, 8, 32, 32]]])
    labels = torch.tensor([[0, 1]])
    # Every location predicts the second box: a location inside both goes to it.
    boxes = true_boxes[:, 1].view(1, 1, 1, 4).expand(1, 16, 1, 4)
    scores = torch.full((1, 16, 2), 0.5)
    positive, matched, target = assign(scores, boxes, centres, true_boxes, labels, topk=10, alpha=0.5, beta=6.0)
    inside_first = {0, 1, 4, 5}  # centres (4|12, 4|12)
    inside_second = {5, 6, 7, 9, 10, 11, 13, 14, 15}
    assert set(positive[0].nonzero().flatten().tolist()) == inside_first | inside_second
    assert matched[0, 5].item() == 1  # inside both, overlaps the second exactly
    assert target[0, 5].item() == pytest.approx(1.0)
    assert target[0, ~positive[0]].eq(0).all()


def test_aligned_loss_trains_on_negative_outputs_and_class_specific_boxes():
    for agnostic in (True, False):
        model = fastdet(3, 1, (32, 32), class_agnostic=agnostic, head_width=8, head_depth=1, widths=(8, 8, 8))
        task = DetectTask(3)
        raw = (-40 * torch.ones(2, 4, 4, 3 + (4 if agnostic else 12))).requires_grad_()
        boxes = torch.tensor([[[2.0, 2, 20, 20], [0, 0, 0, 0]], [[10, 4, 30, 30], [1, 1, 5, 5]]])
        labels = torch.tensor([[2, -1], [0, 1]])  # the 4 x 4 box holds no location centre: it takes the nearest
        loss, terms = task.compute_loss(model, raw, boxes, labels, (32, 32))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(raw.grad).all() and terms["box"].item() > 0


def test_a_short_training_lowers_the_loss():
    torch.manual_seed(0)
    x = torch.zeros(16, 1, 32, 32)
    boxes = torch.zeros(16, 1, 4)
    labels = torch.randint(0, 2, (16, 1))
    for i in range(16):
        top, left = torch.randint(0, 16, (2,)).tolist()
        x[i, 0, top : top + 14, left : left + 14] = 1.0 if labels[i, 0] == 0 else -1.0
        boxes[i, 0] = torch.tensor([left, top, left + 14, top + 14])
    model = fastdet(2, 1, (32, 32), widths=(8, 16, 16), head_width=16, head_depth=1)
    task = TASKS.create("detect", {}, num_classes=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss, logs = task.training_step(model, (x, boxes, labels))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert set(logs) == {"loss_classes", "loss_box"}
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])


def test_select_thresholds_and_suppresses_per_class():
    boxes = torch.tensor([[[[0.0, 0, 10, 10]], [[1, 0, 11, 10]], [[20, 20, 30, 30]], [[40, 40, 50, 50]]]])
    scores = torch.tensor([[[0.9, 0.0], [0.8, 0.7], [0.0, 0.6], [0.005, 0.0]]])
    (out,) = select(boxes, scores, score_threshold=0.01, iou_threshold=0.5, max_detections=100)
    # The second location's class-0 box overlaps the first's (IoU 0.82): suppressed; its class-1 box is kept.
    assert out["scores"].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert out["labels"].tolist() == [0, 1, 1]
    assert out["boxes"].dtype == torch.float32 and out["labels"].dtype == torch.int64


def test_predict_returns_one_torchmetrics_dict_per_image():
    for name, loss in (("yolo", "yolov1"), ("fastdet", "aligned")):
        model = yolo_grid(3, 1, (64, 64)) if name == "yolo" else fastdet(3, 1, (64, 64))
        preds = DetectTask(3, loss=loss, max_detections=7).predict(model.eval(), torch.randn(2, 1, 64, 64))
        assert len(preds) == 2
        for pred in preds:
            assert set(pred) == {"boxes", "scores", "labels"} and len(pred["boxes"]) <= 7
            assert pred["boxes"].shape[1:] == (4,) and (pred["boxes"] >= 0).all() and (pred["boxes"] <= 64).all()


def test_a_loss_and_a_model_that_do_not_match_are_a_user_error():
    batch = (torch.randn(1, 1, 64, 64), torch.tensor([[[0.0, 0, 30, 30]]]), torch.tensor([[0]]))
    with pytest.raises(UserError, match="yolo-grid"):
        DetectTask(3, loss="yolov1").training_step(fastdet(3, 1, (64, 64)), batch)
    with pytest.raises(UserError, match=r"task\.loss"):
        DetectTask(3, loss="yolov2")
