import pytest
import torch
import torch.nn.functional as F

from convscope.models import create_model
from convscope.tasks import TASKS
from convscope.tasks.classify import ClassifyTask


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, 12, (6, 9), generator=torch.Generator().manual_seed(0))
    return tokens, torch.tensor([0, 1, 2, 0, 1, 2])


def _model():
    torch.manual_seed(0)
    return create_model("char-cnn", num_classes=3, inputs={"vocab_size": 12, "max_len": 8}).eval()


def test_registered_on_text_data_with_classify_metrics() -> None:
    task = TASKS.get("text")(num_classes=3)
    assert task.name == "text" and task.modality == "text"
    assert set(task.make_metrics(detailed=True)) == set(ClassifyTask(3).make_metrics(detailed=True))


def test_training_step_is_cross_entropy_over_token_batches() -> None:
    task, model = TASKS.get("text")(num_classes=3, label_smoothing=0.1), _model()
    tokens, labels = _batch()
    loss, logged = task.training_step(model, (tokens, labels))
    logits = model(tokens)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, labels, label_smoothing=0.1).item())
    assert logged["accuracy"].item() == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    assert task.batch_size((tokens, labels)) == 6


def test_validation_and_prediction() -> None:
    task, model = TASKS.get("text")(num_classes=3), _model()
    tokens, labels = _batch()
    metrics = task.make_metrics()
    task.validation_step(model, (tokens, labels), metrics)
    logits = model(tokens)
    values = metrics.compute()
    assert values["accuracy"].item() == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    assert values["loss"].item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    probs = task.predict(model, tokens)
    torch.testing.assert_close(probs, logits.softmax(dim=1))
