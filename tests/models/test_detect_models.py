"""The detectors: output shapes, options, and a body that a fastnet classification run's weights fill."""

import pytest
import torch

from convscope.errors import UserError
from convscope.models import create_model, model_options
from convscope.models.weights import load_initial_weights

INPUTS = {"in_channels": 1, "image_size": (64, 64)}


@pytest.mark.parametrize("head", ["fc", "conv"])
def test_yolo_grid_outputs_s_by_s_cells_of_b_boxes_and_c_scores(head):
    model = create_model("yolo-grid", num_classes=10, inputs=INPUTS, grid=4, boxes=3, head=head, hidden=32)
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 4, 4, 3 * 5 + 10)


def test_fastdet_outputs_one_prediction_per_stride_8_location():
    agnostic = create_model("fastdet", num_classes=10, inputs=INPUTS)
    specific = create_model("fastdet", num_classes=10, inputs=INPUTS, class_agnostic=False)
    x = torch.randn(2, 1, 64, 64)
    assert agnostic(x).shape == (2, 8, 8, 10 + 4)
    assert specific(x).shape == (2, 8, 8, 10 + 4 * 10)
    assert agnostic.stride == 8 and agnostic.class_agnostic and not specific.class_agnostic
    fine = create_model("fastdet", num_classes=10, inputs=INPUTS, stride=4)
    assert fine(x).shape == (2, 16, 16, 10 + 4) and fine.stride == 4


@pytest.mark.parametrize(("name", "options"), [("yolo-grid", {}), ("fastdet", {}), ("fastdet", {"stride": 4})])
def test_a_fastnet_classification_runs_weights_fill_the_detectors_body(name, options, tmp_path):
    classifier = create_model("fastnet-small", num_classes=10, inputs={"in_channels": 1, "image_size": (28, 28)})
    path = tmp_path / "classifier.pth"
    torch.save(classifier.state_dict(), path)
    detector = create_model(name, num_classes=10, inputs=INPUTS, **options)
    report = load_initial_weights(detector, path)
    body = [k for k in detector.state_dict() if k.startswith("features.")]
    assert body and set(body) <= set(report.loaded)
    assert not any(k.startswith("features.") for k in report.left)
    assert torch.equal(detector.features[0].weight, classifier.features[0].weight)


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="grid"):
        create_model("yolo-grid", num_classes=3, inputs=INPUTS, grid=0)
    with pytest.raises(UserError, match="class_agnostic"):
        create_model("fastdet", num_classes=3, inputs=INPUTS, class_agnostic="yes")
    with pytest.raises(UserError, match="stride"):
        create_model("fastdet", num_classes=3, inputs=INPUTS, stride=16)
    with pytest.raises(UserError, match="head"):
        create_model("yolo-grid", num_classes=3, inputs=INPUTS, head="mlp")
    with pytest.raises(UserError, match="too small"):
        create_model("fastdet", num_classes=3, inputs={"in_channels": 1, "image_size": (8, 8)})
    assert model_options("fastdet")["class_agnostic"] is True
