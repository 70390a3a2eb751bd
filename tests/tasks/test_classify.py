import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convscope.tasks import TASKS
from convscope.tasks.classify import ClassifyTask


class Fixed(nn.Module):
    """Returns preset logits, whatever the input."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits


def test_training_step_is_cross_entropy_with_label_smoothing():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    y = torch.tensor([0, 2])
    task = ClassifyTask(3, label_smoothing=0.1)
    loss, logs = task.training_step(Fixed(logits), (torch.zeros(2, 1, 4, 4), y))
    assert loss.item() == pytest.approx(F.cross_entropy(logits, y, label_smoothing=0.1).item())
    assert logs["accuracy"].item() == pytest.approx(0.5)


def test_validation_metrics_weight_every_sample():
    task = ClassifyTask(4, topk=2)
    metrics = task.make_metrics(detailed=True)
    batches = [
        (torch.tensor([[5.0, 1, 0, 0], [0, 5.0, 1, 0], [0, 0, 1, 5.0]]), torch.tensor([0, 2, 3])),
        (torch.tensor([[1.0, 5, 0, 0]]), torch.tensor([1])),
    ]
    for logits, y in batches:
        task.validation_step(Fixed(logits), (torch.zeros(len(y), 1, 2, 2), y), metrics)
    values = metrics.compute()
    assert values["accuracy"].item() == pytest.approx(3 / 4)
    assert values["top2_accuracy"].item() == pytest.approx(1.0)
    all_logits = torch.cat([b[0] for b in batches])
    all_y = torch.cat([b[1] for b in batches])
    assert values["loss"].item() == pytest.approx(F.cross_entropy(all_logits, all_y).item(), rel=1e-5)
    assert values["confusion_matrix"].tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]
    assert values["per_class_accuracy"].tolist() == [1.0, 1.0, 0.0, 1.0]


def test_topk_dropped_when_not_informative():
    assert "top5_accuracy" not in ClassifyTask(2).make_metrics()
    assert "top5_accuracy" in ClassifyTask(10).make_metrics()


def test_registered_by_name():
    task = TASKS.get("classify")(num_classes=3)
    probs = task.predict(Fixed(torch.tensor([[0.0, 0.0, 10.0]])), torch.zeros(1, 1, 2, 2))
    assert probs.sum().item() == pytest.approx(1.0)
    assert probs.argmax().item() == 2
