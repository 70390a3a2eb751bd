import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convscope.errors import UserError
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


class LeftHalfReader(nn.Module):
    """Logits that depend on which half of the image is bright: class 0 for the left, class 1 for the right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        left, right = x[..., :half].mean(dim=(1, 2, 3)), x[..., half:].mean(dim=(1, 2, 3))
        return torch.stack([left - right, right - left], dim=1) * 4


def test_flip_tta_averages_the_probabilities_of_the_image_and_its_mirror():
    x = torch.zeros(2, 1, 4, 4)
    x[0, ..., :2] = 1.0  # bright left
    x[1, ..., :1] = 1.0  # brighter left column only
    model = LeftHalfReader()
    plain = ClassifyTask(2).predict(model, x)
    flipped = ClassifyTask(2).predict(model, x.flip(-1))
    averaged = ClassifyTask(2, tta="flip").predict(model, x)
    torch.testing.assert_close(averaged, (plain + flipped) / 2)
    # Mirror-symmetric evidence cancels: each image's two views disagree exactly.
    torch.testing.assert_close(averaged, torch.full((2, 2), 0.5))


def test_flip_tta_loss_is_the_cross_entropy_of_the_averaged_prediction():
    x = torch.randn(5, 1, 4, 6)
    y = torch.tensor([0, 1, 1, 0, 1])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(24, 2))
    task = ClassifyTask(2, tta="flip")
    metrics = task.make_metrics()
    task.validation_step(model, (x, y), metrics)
    probs = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2
    expected = F.nll_loss(probs.log(), y).item()
    assert metrics.compute()["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_flip_shift_tta_weights_airbench_six_views():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 5, 6)
    model = nn.Sequential(nn.Flatten(), nn.Linear(60, 4))
    got = ClassifyTask(4, tta="flip-shift").predict(model, x)

    def shifted(view: torch.Tensor, by: int) -> torch.Tensor:
        # Pixel (i, j) of the view is pixel (i - by, j - by) of the image, reflected at the edges.
        def reflect(n: int) -> torch.Tensor:
            return torch.tensor([abs(i - by) if i - by < n else 2 * (n - 1) - (i - by) for i in range(n)])

        return view.index_select(-2, reflect(view.shape[-2])).index_select(-1, reflect(view.shape[-1]))

    def probs(view: torch.Tensor) -> torch.Tensor:
        return model(view).softmax(1)

    expected = (probs(x) + probs(x.flip(-1))) / 4 + sum(
        (probs(shifted(x, by)) + probs(shifted(x, by).flip(-1))) / 8 for by in (1, -1)
    )
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, ClassifyTask(4, tta="flip").predict(model, x))


def test_tta_is_checked():
    with pytest.raises(UserError, match=r"task.tta = 'crops' is not one of: none, flip, flip-shift"):
        ClassifyTask(3, tta="crops")
    with pytest.raises(UserError, match=r"mirrors images; task 'text' takes text inputs"):
        TASKS.get("text")(num_classes=2, tta="flip")
    assert TASKS.get("splitbrain-finetune")(num_classes=2, tta="flip").tta == "flip"  # Lab images mirror too
