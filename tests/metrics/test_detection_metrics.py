"""Detection metrics: mAP through torchmetrics, the confusion matrix with a background, eval.json's summary."""

import pytest
import torch

from convscope.metrics.detection import DetectionConfusion, MeanAP, summarize
from convscope.tasks.detect import DetectTask

CLASSES = ["a", "b", "c"]


def detections(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels)}  # fmt: skip


def truths(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}


def test_perfect_detections_score_one_and_validation_gets_scalars():
    metric = MeanAP()
    metric.update([detections([[0, 0, 20, 20], [30, 30, 60, 50]], [0.9, 0.8], [0, 1])],
                  [truths([[0, 0, 20, 20], [30, 30, 60, 50]], [0, 1])])  # fmt: skip
    values = metric.compute()
    assert set(values) == {"map50", "map50_95"}
    assert values["map50"].item() == pytest.approx(1.0) and values["map50_95"].item() == pytest.approx(1.0)


def test_a_loose_box_counts_at_the_low_iou_thresholds_only():
    metric = MeanAP()
    # IoU 0.64: a hit at thresholds 0.5, 0.55, 0.6, a miss from 0.65 up (3 of the 10 count).
    metric.update([detections([[0, 0, 25, 20]], [0.9], [0])], [truths([[0, 0, 16, 20]], [0])])
    values = metric.compute()
    assert values["map50"].item() == pytest.approx(1.0)
    assert values["map50_95"].item() == pytest.approx(0.3, abs=0.01)


def test_the_confusion_matrix_has_a_background_row_and_column():
    metric = DetectionConfusion(3)
    preds = [detections([[0, 0, 20, 20], [30, 30, 60, 60], [0, 40, 10, 50], [1, 1, 21, 21]], [0.9, 0.8, 0.7, 0.1],
                        [0, 2, 1, 1])]  # fmt: skip
    target = [truths([[0, 0, 20, 20], [30, 30, 60, 60], [40, 0, 60, 20]], [0, 1, 2])]
    counts = metric(preds, target)
    expected = torch.zeros(4, 4, dtype=torch.long)
    expected[0, 0] = 1  # right
    expected[1, 2] = 1  # a true b predicted as c
    expected[3, 1] = 1  # a b where nothing is (the 0.1 detection is under the threshold)
    expected[2, 3] = 1  # the c that nothing found
    assert torch.equal(counts, expected)


def test_summarize_gives_eval_json_fields_from_the_tasks_detailed_metrics():
    metrics = DetectTask(3).make_metrics(detailed=True)
    preds = [detections([[0, 0, 20, 20], [30, 30, 60, 60]], [0.9, 0.8], [0, 2])]
    target = [truths([[0, 0, 20, 20], [30, 30, 60, 60]], [0, 1])]
    metrics["map50_95"].update(preds, target)
    metrics["confusion_matrix"].update(preds, target)
    metrics["loss"].update(torch.tensor(1.0))
    result = summarize(metrics.compute(), CLASSES)
    assert result["map50"] == pytest.approx(0.5)  # class a found, class b missed; c has no true box
    assert result["per_class_ap"]["a"]["ap50"] == pytest.approx(1.0)
    assert result["per_class_ap"]["b"]["ap50"] == pytest.approx(0.0)
    assert result["per_class_ap"]["c"] == {"ap50_95": None, "ap50": None}
    assert set(result["precision_recall"]["curves"]) == {"a", "b"}
    assert len(result["precision_recall"]["curves"]["a"]["recall"]) == 101
    assert result["confusion_matrix"]["labels"] == ["a", "b", "c", "background"]
    assert result["confusion_matrix"]["counts"][1][2] == 1
