"""``convscope explain`` for image runs: each input file through the run's evaluation transform, one method's
maps (or the feature maps), one figure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from convscope.errors import UserError
from convscope.explain import figures, methods

if TYPE_CHECKING:
    from convscope.run import LoadedRun


def explain_images(
    run: LoadedRun,
    paths: Sequence[str],
    out: Path,
    *,
    method: str | None,
    target: str | None = None,
    layer: str | None = None,
    display: figures.Display | None = None,
) -> Path:
    """Explain ``target`` (a class name or index; default each image's predicted class) with ``method`` and
    draw the figure into ``out``, printing the predictions, the conversions and the method's notes."""
    if method is None:
        raise UserError(f"--method is required: one of {', '.join(methods.method_names())}")
    baseline = methods.black_baseline(run.info["mean"], run.info["std"])
    explainer = methods.create_method(method, run.model, layer=layer, baseline=baseline)
    target_index = None if target is None else class_index(target, run.classes)
    x = run.modality.load_inputs(run.recipe, run.info, list(paths), run.device)  # notes any conversion
    probs = run.task.predict(run.model, x).clone()  # a normal tensor: attributions back-propagate through it
    predicted = probs.argmax(dim=1)
    targets = predicted if target_index is None else torch.full_like(predicted, target_index)
    images = figures.denormalize(x, run.info["mean"], run.info["std"])
    if isinstance(explainer, methods.FeatureMaps):
        stages = [explainer.stages(x[i : i + 1]) for i in range(len(x))]
        fig = figures.feature_maps_figure(images, stages, probs, run.classes)
    else:
        maps = explainer.attribute(x, targets)
        titles = []
        for p_row, t, pred in zip(probs, targets.tolist(), predicted.tolist(), strict=True):
            shown = f"{run.classes[t]} p={p_row[t]:.3f}"
            titles.append(shown if t == pred else f"{shown}\n(predicted {run.classes[pred]} p={p_row[pred]:.3f})")
        fig = figures.explanation_figure(images, maps, titles, method, display)
    for path, p_row, t, pred in zip(paths, probs, targets.tolist(), predicted.tolist(), strict=True):
        print(f"{path}: predicted {run.classes[pred]!r} p={p_row[pred]:.3f}; explained {run.classes[t]!r}")
    for note in explainer.notes:
        print(note)
    figures.save_figure(fig, out)
    print(f"written: {out}")
    return out


def class_index(target: str, classes: Sequence[str]) -> int:
    """A class given by name, or by index when no class has that name."""
    if target in classes:
        return list(classes).index(target)
    if target.isdigit() and int(target) < len(classes):
        return int(target)
    raise UserError(
        f"--target {target!r} is not a class of this run; expected a name or 0..{len(classes) - 1}: "
        + ", ".join(classes)
    )
