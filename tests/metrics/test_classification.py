import pytest
import torch

from convscope.metrics.classification import CURVE_POINTS, summarize
from convscope.tasks.classify import ClassifyTask
from tests.tasks.test_classify import Fixed


def evaluate(logits: torch.Tensor, y: torch.Tensor, classes: list[str]) -> dict:
    task = ClassifyTask(len(classes))
    metrics = task.make_metrics(detailed=True)
    task.validation_step(Fixed(logits), (torch.zeros(len(y), 1, 2, 2), y), metrics)
    return summarize(metrics.compute(), classes)


def mann_whitney_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """P(score of a positive > score of a negative), ties counting half: the area under the ROC curve."""
    pos, neg = scores[positive], scores[~positive]
    greater = (pos[:, None] > neg[None, :]).float().sum() + 0.5 * (pos[:, None] == neg[None, :]).float().sum()
    return (greater / (len(pos) * len(neg))).item()


@pytest.mark.filterwarnings("ignore:No positive samples in targets")
def test_rates_follow_seed_002s_definitions_and_skip_an_absent_class():
    logits = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0], [3.0, 0, 0], [0, 3.0, 0], [0, 3.0, 0]])
    y = torch.tensor([0, 0, 0, 1, 1, 1])  # class "c" has no test sample
    result = evaluate(logits, y, ["a", "b", "c"])
    tpr = result["true_positive_rate"]
    assert tpr["a"] == pytest.approx(1 / 3) and tpr["b"] == pytest.approx(2 / 3) and tpr["c"] is None
    fpr = result["false_positive_rate"]  # P(f(X) = c | Y != c)
    assert fpr["a"] == pytest.approx(1 / 3) and fpr["b"] == pytest.approx(1 / 3) and fpr["c"] == pytest.approx(1 / 6)
    assert result["balanced_error_rate"] == pytest.approx(((1 - 1 / 3) + (1 - 2 / 3)) / 2)
    assert result["roc"]["kind"] == "one-vs-rest" and result["roc"]["auc"]["c"] is None
    assert set(result["roc"]["curves"]) == {"a", "b"}
    probs = logits.softmax(dim=1)
    assert result["roc"]["auc"]["a"] == pytest.approx(mann_whitney_auc(probs[:, 0], y == 0))
    assert result["roc"]["auc_macro"] == pytest.approx((result["roc"]["auc"]["a"] + result["roc"]["auc"]["b"]) / 2)
    assert result["precision_recall"]["average_precision"]["c"] is None


def test_binary_roc_is_the_positive_class_curve_and_uses_probabilities():
    # Logits inside [0, 1]: taken as probabilities they would rank the samples differently from softmax.
    logits = torch.tensor([[0.0, 0.5], [0.9, 0.6], [0.1, 0.7], [0.3, 0.2]])
    y = torch.tensor([1, 0, 1, 0])
    result = evaluate(logits, y, ["no", "yes"])
    roc = result["roc"]
    assert roc["kind"] == "binary" and roc["positive_class"] == "yes"
    expected = mann_whitney_auc(logits.softmax(dim=1)[:, 1], y == 1)
    assert mann_whitney_auc(logits[:, 1], y == 1) != pytest.approx(expected)  # the case is a real test
    assert roc["binary_auc"] == pytest.approx(expected) == roc["auc"]["yes"] == pytest.approx(1.0)
    curve = roc["curves"]["yes"]
    assert curve["fpr"][0] == 0 and curve["tpr"][-1] == 1 and len(curve["fpr"]) == len(curve["tpr"])


def test_long_curves_are_thinned_for_the_json():
    torch.manual_seed(0)
    logits, y = torch.randn(2000, 2), torch.randint(0, 2, (2000,))
    curve = evaluate(logits, y, ["no", "yes"])["roc"]["curves"]["yes"]
    assert len(curve["fpr"]) == CURVE_POINTS and curve["fpr"][-1] == 1.0
