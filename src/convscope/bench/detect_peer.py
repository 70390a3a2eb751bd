"""The Ultralytics peer of ``convscope bench detect``: YOLO11n from scratch with Ultralytics' default training recipe
at ``imgsz=64`` on the CPU, trained for a wall-clock budget (its own ``time=`` argument: after each epoch it
re-plans the epochs and their schedule to fit the time left, and stops when the time is spent), then its boxes for
the test scenes in torchmetrics' format, scored by the study with the same code as convscope's.

It runs in its own process (``python -m convscope.bench.detect_peer``): Ultralytics sets process-wide state on import
and in training (``OMP_NUM_THREADS``, torch's thread count, OpenCV's threads) that must not leak into the convscope runs
of the same study, and it reads its configuration folder and its offline switch when imported.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from convscope.errors import UserError

MODEL = "yolo11n.yaml"  # the architecture only: from scratch, nothing to download
IMAGE_SIZE = 64
# Ultralytics caps its data workers at the machine's cores (and uses none on a CPU, whatever is asked).
WORKERS = 2
# Boxes are kept down to Ultralytics' own validation settings (score >= 0.001, NMS IoU 0.7, 300 a scene): mAP ranks
# them, and a higher threshold would only lower the peer's figure.
SCORE_THRESHOLD = 0.001
NMS_IOU = 0.7
MAX_DETECTIONS = 300
PREDICTIONS_FILE = "predictions.pt"
FIGURES_FILE = "peer.json"


@dataclass
class PeerResult:
    predictions: list[dict[str, torch.Tensor]]  # per test image: boxes (xyxy pixels), scores, labels
    figures: dict[str, Any]  # seconds, images per second, epochs, settings


def to_torchmetrics(results: list[Any]) -> list[dict[str, torch.Tensor]]:
    """Ultralytics' ``Results`` (one per image) as torchmetrics' detection dicts: boxes float K x 4 xyxy in pixels of
    the input image, scores float K, labels int64 K."""
    return [
        {
            "boxes": result.boxes.xyxy.detach().float().cpu(),
            "scores": result.boxes.conf.detach().float().cpu(),
            "labels": result.boxes.cls.detach().long().cpu(),
        }
        for result in results
    ]


def offline_environment(config_dir: Path) -> dict[str, str]:
    """The environment that keeps Ultralytics off the network: its online checks off (hub, events, updates), its
    settings in ``config_dir``, and a font already there for the dataset check, which otherwise tries to fetch one."""
    config_dir.mkdir(parents=True, exist_ok=True)
    font = config_dir / "Arial.ttf"
    if not font.exists():
        from matplotlib import font_manager

        shutil.copyfile(font_manager.findfont("DejaVu Sans"), font)
    return {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(config_dir)}


def train_and_predict(
    data_yaml: Path, test_images: torch.Tensor, budget_seconds: float, workdir: Path, batch_size: int
) -> PeerResult:
    """Train YOLO11n on ``data_yaml`` for ``budget_seconds`` and predict ``test_images`` (uint8 N x C x H x W). Meant
    for the peer's own process, with :func:`offline_environment` set before Ultralytics is imported.

    Ultralytics' own thread setting is kept: on a CPU it loads data in the training process (no workers) and gives
    torch the cores less one. Forcing 2 torch threads on the 2-core machine made its training far slower, so the
    peer runs as Ultralytics sets itself up."""
    from ultralytics import YOLO, settings

    settings.update(sync=False)  # no analytics, whatever the user's settings say
    model = YOLO(MODEL)
    clock: dict[str, Any] = {"batches": 0, "epochs": 0, "validated": 0}

    def on_train_start(trainer: Any) -> None:
        clock["start"] = time.perf_counter()

    def on_train_batch_start(trainer: Any) -> None:  # a started batch is trained, even the one the budget ends
        clock["batches"] += 1
        clock["batch_size"] = trainer.batch_size

    def on_train_epoch_end(trainer: Any) -> None:  # also the last epoch the budget cut short
        clock["epochs"] += 1

    def on_fit_epoch_end(trainer: Any) -> None:
        # After each epoch's validation, as convscope's train_seconds counts it; the final evaluation of the best
        # checkpoint calls it once more, after training, and is not counted.
        if clock["validated"] < clock["epochs"]:
            clock["validated"] += 1
            clock["seconds"] = time.perf_counter() - clock["start"]

    for callback in (on_train_start, on_train_batch_start, on_train_epoch_end, on_fit_epoch_end):
        model.add_callback(callback.__name__, callback)
    started = time.perf_counter()
    model.train(data=str(data_yaml), time=budget_seconds / 3600, imgsz=IMAGE_SIZE, device="cpu", workers=WORKERS,
                pretrained=False, plots=False, project=str(workdir), name="train", exist_ok=True,
                verbose=False)  # fmt: skip
    wall = time.perf_counter() - started
    trainer = model.trainer
    # Ultralytics has loaded its best checkpoint (by its validation fitness) into `model` after training.
    images = test_images.float().div(255)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)  # it reads its training images as 3 channels

    def predict(part: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        results = model.predict(part.contiguous(), imgsz=IMAGE_SIZE, conf=SCORE_THRESHOLD, iou=NMS_IOU,
                                max_det=MAX_DETECTIONS, device="cpu", verbose=False)  # fmt: skip
        return to_torchmetrics(results)

    predict(images[:batch_size])  # untimed warm-up: the predictor is set up on its first call
    predictions: list[dict[str, torch.Tensor]] = []
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        predictions += predict(images[start : start + batch_size])
    inference_seconds = time.perf_counter() - started
    train_images = clock["batches"] * clock.get("batch_size", 0)  # each epoch's last batch may hold fewer
    figures = {
        "seconds": round(clock["seconds"], 2),
        "wall_seconds": round(wall, 2),
        "epochs": clock["epochs"],
        "train_images_seen": train_images,
        "train_images_per_second": round(train_images / clock["seconds"], 1),
        "inference_seconds": round(inference_seconds, 3),
        "inference_images_per_second": round(len(images) / inference_seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "settings": {
            "model": MODEL,
            "imgsz": IMAGE_SIZE,
            "device": "cpu",
            "workers": trainer.args.workers,
            "cache": trainer.args.cache,
            "time_hours": budget_seconds / 3600,
            "batch": trainer.args.batch,
            "optimizer": trainer.args.optimizer,
            "conf": SCORE_THRESHOLD,
            "iou": NMS_IOU,
            "max_det": MAX_DETECTIONS,
            "ultralytics": _version(),
        },
    }
    return PeerResult(predictions, figures)


def _version() -> str:
    import ultralytics

    return ultralytics.__version__


def run_peer(
    data_yaml: Path,
    test_images: torch.Tensor,
    budget_seconds: float,
    workdir: Path,
    batch_size: int = 500,
) -> PeerResult:
    """Train and predict in a process of its own; a finished result in ``workdir`` is kept (a restarted study does
    not train the peer again)."""
    predictions_path, figures_path = workdir / PREDICTIONS_FILE, workdir / FIGURES_FILE
    if not (predictions_path.is_file() and figures_path.is_file()):
        # Only whether it is there: importing it here would set this process's threads and check the network.
        if importlib.util.find_spec("ultralytics") is None:
            raise UserError("the detection benchmark's peer needs Ultralytics: pip install 'convscope[bench]'")
        workdir.mkdir(parents=True, exist_ok=True)
        torch.save(test_images, workdir / "test-images.pt")
        arguments = (data_yaml, workdir / "test-images.pt", budget_seconds, workdir, batch_size)
        command = [sys.executable, "-m", "convscope.bench.detect_peer", *map(str, arguments)]
        completed = subprocess.run(command, check=False, env=offline_environment(workdir / "config"))
        if completed.returncode != 0 or not figures_path.is_file():
            raise UserError(f"detection benchmark: the Ultralytics peer failed (exit status {completed.returncode}); "
                            f"its output is above, its folder {workdir}")  # fmt: skip
        (workdir / "test-images.pt").unlink()
    else:
        print(f"kept the finished Ultralytics run {workdir}")
    return PeerResult(torch.load(predictions_path, weights_only=True), json.loads(figures_path.read_text()))


def main(argv: list[str]) -> None:
    data_yaml, test_images, budget, workdir, batch_size = argv
    images = torch.load(test_images, weights_only=True)
    result = train_and_predict(Path(data_yaml), images, float(budget), Path(workdir), int(batch_size))
    torch.save(result.predictions, Path(workdir) / PREDICTIONS_FILE)
    (Path(workdir) / FIGURES_FILE).write_text(json.dumps(result.figures, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
