"""The weak segmentation study's figures: refined masks where the valid scenes chose a CRF, raw ones beside them."""

import json

from convscope import api
from convscope.bench import weakseg as bench_weakseg

RULES = {"weak": ("attention", 0.40, 0.64), "cam": ("cam", 0.25, 0.47), "supervised": ("argmax", 0.66, None)}


def _figures(iou: float) -> dict:
    return {"mean_iou": iou, "per_class_iou": {"background": iou}, "segmentation_accuracy": {"background": iou},
            "mean_segmentation_accuracy": iou, "pixel_accuracy": iou, "valid_mean_iou": iou}  # fmt: skip


def fake_train(recipe, *, out, resume=False):
    run = {v: k for k, v in bench_weakseg.RECIPES.items()}[recipe.name]
    rule, raw, refined = RULES[run]
    crf = None if refined is None else {"params": {"temperature": 1.0, "sxy": 10, "srgb": 5}, **_figures(refined)}
    rules = {rule: {"params": {"threshold": 0.5}, **_figures(raw), "crf": crf, "seconds": 1.0}}
    if run == "cam":
        rules["gradcam"] = {**rules["cam"], "layer": "features.9"}
    out.mkdir(parents=True, exist_ok=True)
    (out / "segmentation.json").write_text(json.dumps({"classes": ["background"], "rules": rules}))
    (out / "summary.json").write_text(json.dumps({"test_accuracy": 0.7, "train_seconds": 100.0 + len(run)}))


def test_headline_figures_are_the_refined_masks_and_the_raw_ones_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(api, "train", fake_train)
    result = bench_weakseg.run_weakseg_study(out=tmp_path / "w.json", overrides={}, results_dir=tmp_path, machine={},
                                             run_dir=tmp_path / "study")  # fmt: skip
    assert (result["weak_miou"], result["cam_miou"], result["supervised_miou"]) == (0.64, 0.47, 0.66)
    assert result["raw_miou"] == {"weak": 0.40, "cam": 0.25, "gradcam": 0.25, "supervised": 0.66}
    assert result["models"]["supervised"]["crf"] is None and result["models"]["weak"]["crf"]["sxy"] == 10
    assert result["ratio_reached"] and result["margin_reached"]  # 0.64 >= 0.85 x 0.66, 0.64 >= 0.47 + 0.05
    assert json.loads((tmp_path / "w.json").read_text())["weak_miou"] == 0.64


def test_a_finished_study_is_kept_not_trained_again(tmp_path, monkeypatch):
    monkeypatch.setattr(api, "train", fake_train)
    kwargs = {"overrides": {}, "results_dir": tmp_path, "machine": {}, "run_dir": tmp_path / "study"}
    bench_weakseg.run_weakseg_study(out=tmp_path / "first.json", **kwargs)

    def must_not_train(recipe, *, out, resume=False):
        raise AssertionError(f"trained {out} again")

    monkeypatch.setattr(api, "train", must_not_train)
    again = bench_weakseg.run_weakseg_study(out=tmp_path / "again.json", **kwargs)
    assert again["weak_miou"] == 0.64 and again["wall_seconds"] == {"weak": None, "cam": None, "supervised": None}
