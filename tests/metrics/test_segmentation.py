import pytest
import torch

from convscope.metrics.segmentation import segmentation_metrics, summarize_segmentation


def test_iou_per_image_and_seed_002s_segmentation_accuracy_over_all_pixels():
    truth = torch.tensor([[[0, 0], [1, 1]], [[0, 0], [0, 0]]])
    pred = torch.tensor([[[0, 1], [1, 1]], [[0, 0], [0, 1]]])
    metrics = segmentation_metrics(3)
    metrics.update(pred, truth)
    result = summarize_segmentation(metrics.compute(), ["background", "shirt", "shoe"])

    # Image 1: class 0 IoU 1/2, class 1 IoU 2/3. Image 2: class 0 IoU 3/4, class 1 IoU 0/1.
    assert result["per_class_iou"]["background"] == pytest.approx((1 / 2 + 3 / 4) / 2)
    assert result["per_class_iou"]["shirt"] == pytest.approx((2 / 3 + 0) / 2)
    assert result["per_class_iou"]["shoe"] is None  # never predicted nor true
    assert result["mean_iou"] == pytest.approx(((1 / 2 + 3 / 4) / 2 + (2 / 3) / 2) / 2)
    # SA(c) = N(Y=c, Ŷ=c) / (N(Y=c, Ŷ=c) + N(Y≠c, Ŷ=c) + N(Y=c, Ŷ≠c)), counted over both images.
    assert result["segmentation_accuracy"]["background"] == pytest.approx(4 / (4 + 0 + 2))
    assert result["segmentation_accuracy"]["shirt"] == pytest.approx(2 / (2 + 2 + 0))
    assert result["segmentation_accuracy"]["shoe"] is None
    assert result["mean_segmentation_accuracy"] == pytest.approx((4 / 6 + 2 / 4) / 2)
    assert result["pixel_accuracy"] == pytest.approx(6 / 8) and result["pixels"] == 8
