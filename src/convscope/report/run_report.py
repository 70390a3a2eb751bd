"""``convscope report RUN_DIR``: one page with everything about a run, from its files and a few passes
over its test split."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # no screen here or on most servers; must precede pyplot
import matplotlib.pyplot as plt
import torch

from convscope.errors import UserError
from convscope.explain import figures, methods, trust
from convscope.report import boxes, page
from convscope.run import atomic_write, read_bytes, read_json, read_text

if TYPE_CHECKING:
    from convscope.run import LoadedRun

REPORT_FILE = "report.html"
DETECTION_PLOTS = [("confusion_matrix.png", "confusion matrix, background included"), ("precision_recall.png", "PR")]
EXPLAINED_IMAGES = 4
MISTAKES_SHOWN = 8
TRUST_COLUMNS = ["method", "pointing game ↑", "deletion AUC ↓", "insertion AUC ↑", "randomisation Spearman ↓",
                 "verdict", "why", "seconds"]  # fmt: skip


def write_report(run: LoadedRun, evaluation: dict, *, trust_images: int = 50) -> Path:
    """Write ``RUN_DIR/report.html``; ``evaluation`` is :func:`convscope.api.evaluate`'s result."""
    run_dir = run.run_dir
    summary = read_json(run_dir / "summary.json", missing_ok=True)
    if run.task.modality == "boxes":
        sections = _detection_sections(run, summary, evaluation)
    else:
        sections = _classification_sections(run, summary, evaluation, trust_images)
    config = read_text(run_dir / "config.toml")
    sections.append(page.section("Configuration", page.preformatted(config)))
    out = run_dir / REPORT_FILE
    html = page.page(f"convscope report: {run_dir.name}", sections).encode()
    atomic_write(out, lambda f: f.write(html))
    return out


def _detection_sections(run: LoadedRun, summary: dict, evaluation: dict) -> list[str]:
    return [
        _overview(run, summary),
        boxes.detection_metrics(evaluation),
        boxes.detected_scenes(run),
        _plots(run.run_dir, "Training", [("history.png", "loss"), ("schedule.png", "learning-rate schedule")]),
        _plots(run.run_dir, "Errors and curves", DETECTION_PLOTS),
    ]


def _classification_sections(run: LoadedRun, summary: dict, evaluation: dict, trust_images: int) -> list[str]:
    run_dir = run.run_dir
    sections = [
        _overview(run, summary),
        _metrics(evaluation),
        _plots(run_dir, "Training", [("history.png", "loss and accuracy"), ("schedule.png", "learning-rate schedule")]),
        _plots(
            run_dir,
            "Errors and curves",
            [("confusion_matrix.png", "confusion matrix"), ("roc.png", "ROC"), ("precision_recall.png", "PR")],
        ),
    ]
    if run.task.modality == "image":
        sections += [_mistakes(run), _explanations(run), _trust(run, trust_images)]
    else:
        sections.append(
            page.section("Explanations", page.note(f"a {run.task.modality} run: see `convscope explain` for it"))
        )
    return sections


def _overview(run: LoadedRun, summary: dict) -> str:
    rows = [
        ("run", str(run.run_dir)),
        ("recipe", _recipe_words(run)),
        ("task", run.recipe.task.name),
        ("data", f"{run.info['dataset']} ({', '.join(f'{n} {k}' for k, n in run.info['sizes'].items())})"),
        ("classes", ", ".join(run.classes)),
        ("model", f"{run.recipe.model.name} ({summary.get('parameters', '?')} parameters)"),
    ]
    for key in ("epochs", "batch_size", "train_seconds", "device", "precision", "seed", "best_valid_accuracy",
                "test_accuracy"):  # fmt: skip
        if key in summary:
            rows.append((key.replace("_", " "), summary[key]))
    if summary.get("test_accuracy_ci95"):
        low, high = summary["test_accuracy_ci95"]
        rows.append(("test accuracy, 95% interval", f"{low:.3f} - {high:.3f} ({summary.get('test_images')} images)"))
    if summary.get("diverged"):
        diverged = summary["diverged"]
        rows.append(("diverged", f"{diverged['reason']}; kept {diverged['kept']}"))
    return page.section("Run", page.table(["", "value"], rows))


def _recipe_words(run: LoadedRun) -> str:
    """``recipe X: its description``, or ``recipe X on data Y`` when it was written for other data (whose
    description would mislead here)."""
    recipe = run.recipe
    if recipe.on_other_data:
        return f"{recipe.name} (written for {recipe.made_for}) on data {recipe.data.name}"
    return f"{recipe.name}: {recipe.description}" if recipe.description else recipe.name


def _metrics(evaluation: dict) -> str:
    scalars = [
        ("accuracy", evaluation["accuracy"]),
        ("error rate", evaluation["error_rate"]),
        ("balanced error rate", evaluation["balanced_error_rate"]),
        ("loss", evaluation["loss"]),
        *[(k.replace("_", " "), v) for k, v in evaluation.items() if k.startswith("top")],
        ("ROC AUC (" + evaluation["roc"]["kind"] + (", macro)" if evaluation["roc"]["kind"] != "binary" else ")"),
         evaluation["roc"].get("binary_auc", evaluation["roc"]["auc_macro"])),
        ("mean average precision", evaluation["precision_recall"]["mean_average_precision"]),
    ]  # fmt: skip
    support = [sum(row) for row in evaluation["confusion_matrix"]]
    per_class = [
        (
            name,
            support[i],
            evaluation["true_positive_rate"][name],
            evaluation["false_positive_rate"][name],
            evaluation["roc"]["auc"][name],
            evaluation["precision_recall"]["average_precision"][name],
        )
        for i, name in enumerate(evaluation["classes"])
    ]
    return page.section(
        "Test metrics",
        page.text(f"{evaluation['images']} test samples of {evaluation['data']}."),
        page.table(["metric", "value"], scalars),
        page.table(["class", "samples", "true-positive rate", "false-positive rate", "ROC AUC", "AP"], per_class),
    )


def _plots(run_dir: Path, title: str, names: list[tuple[str, str]]) -> str:
    parts = []
    for name, alt in names:
        path = run_dir / "plots" / name
        parts.append(page.image(read_bytes(path), alt) if path.is_file() else page.note(f"no {alt} plot ({name})"))
    return page.section(title, page.gallery(*parts))


@torch.no_grad()
def _mistakes(run: LoadedRun) -> str:
    """The test images the model got wrong with the highest confidence."""
    loader = run.modality.prepare(run.recipe).loaders(run.recipe, run.device)["test"]
    worst: list[tuple[float, torch.Tensor, int, int]] = []  # (confidence, image, true, predicted)
    for x, y in loader:
        probs = run.task.predict(run.model, x)
        confidence, predicted = probs.max(dim=1)
        for i in (predicted != y).nonzero()[:, 0].tolist():
            worst.append((confidence[i].item(), x[i].float().cpu(), y[i].item(), predicted[i].item()))
        worst = sorted(worst, key=lambda item: -item[0])[:MISTAKES_SHOWN]
    if not worst:
        return page.section("Most confident mistakes", page.note("no test image is misclassified"))
    images = figures.denormalize(torch.stack([w[1] for w in worst]), run.info["mean"], run.info["std"])
    fig, axes = plt.subplots(1, len(worst), figsize=(1.9 * len(worst), 2.4), squeeze=False)
    for ax, image, (confidence, _, true, predicted) in zip(axes[0], images, worst, strict=True):
        figures.show_image(ax, image)
        ax.set_title(f"true {run.classes[true]}\nsaid {run.classes[predicted]} {confidence:.2f}", fontsize=7)
    fig.tight_layout()
    return page.section("Most confident mistakes", page.image(figures.figure_png(fig), "most confident mistakes"))


def _explanations(run: LoadedRun) -> str:
    """A few test images under every method's map, then the feature maps of the first."""
    x, y = trust.first_test_images(run, EXPLAINED_IMAGES)
    probs = run.task.predict(run.model, x).clone()  # a normal tensor: attributions back-propagate through it
    predicted = probs.argmax(dim=1)
    images = figures.denormalize(x, run.info["mean"], run.info["std"])
    titles = [
        f"true {run.classes[t]}\n{run.classes[p]} p={probs[i, p]:.2f}"
        for i, (t, p) in enumerate(zip(y.tolist(), predicted.tolist(), strict=True))
    ]
    baseline = methods.black_baseline(run.info["mean"], run.info["std"])
    maps, notes, feature_maps = {}, [], None
    for name in methods.method_names():
        method = methods.create_method(name, run.model, baseline=baseline)
        if isinstance(method, methods.FeatureMaps):
            feature_maps = figures.feature_maps_figure(images[:1], [method.stages(x[:1])], probs[:1], run.classes)
            continue
        try:
            maps[name] = method.attribute(x, predicted)
        except UserError as exc:
            notes.append(f"{name} does not apply: {exc}")
            continue
        notes += method.notes
    parts = [
        page.note("Each map explains the model's predicted class, drawn with seed 004's standardise-and-clip."),
        page.image(figures.figure_png(figures.comparison_figure(images, maps, titles)), "explanations"),
        *[page.note(n) for n in notes],
    ]
    if feature_maps is not None:
        parts += ["<h3>feature maps</h3>", page.image(figures.figure_png(feature_maps), "feature maps")]
    return page.section("Explanations", *parts)


def _trust(run: LoadedRun, count: int) -> str:
    used = min(count, run.info["sizes"]["test"])
    print(f"trust figures on {used} test images (--trust-images {count}) ...", flush=True)
    result = trust.trust_of_run(run, count)
    protocol = result["protocol"]
    no_masks = protocol["pointing_game"] == trust.NEEDS_MASKS
    rows = []
    for name, figure in result["methods"].items():
        if not figure["applies"]:
            rows.append((name, None, None, None, None, "does not apply", figure["reason"], None))
            continue
        label = figure["verdict"]
        shown = (label.upper(), label) if label in ("pass", "fail") else label
        pointing = "needs object masks" if no_masks else figure["pointing_game"]
        rows.append(
            (name, pointing, figure["deletion_auc"], figure["insertion_auc"], figure["randomization_spearman"], shown,
             figure["reason"], figure.get("seconds"))
        )  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, kind, better in ((axes[0], "deletion", "lower"), (axes[1], "insertion", "higher")):
        for name, figure in result["methods"].items():
            if figure["applies"]:
                curve = figure[f"{kind}_curve"]
                steps = [i / (len(curve) - 1) for i in range(len(curve))]
                ax.plot(steps, curve, label=name, linestyle="dotted" if name == "random" else "solid")
        ax.set_xlabel(f"share of pixels {'removed' if kind == 'deletion' else 'put back'} (most salient first)")
        ax.set_ylabel("probability of the class")
        ax.set_title(f"{kind} curves ({better} area: more faithful)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return page.section(
        "Can the explanations be trusted?",
        page.text(f"{protocol['images_used']} test images: {protocol['images']}."),
        page.table(TRUST_COLUMNS, rows),
        page.note(f"Verdict: {protocol['verdict_rule']}. random: noise maps, the chance level, never judged."),
        page.note(
            f"Pointing game {protocol['pointing_game']}."
            if no_masks
            else "integrated-gradients starts from a black image, so black pixels get exactly zero: on objects over "
            "a black background its pointing game is high by construction."
        ),
        page.table(["protocol", ""], [(key.replace("_", " "), value) for key, value in protocol.items()]),
        page.image(figures.figure_png(fig), "deletion and insertion curves"),
    )
