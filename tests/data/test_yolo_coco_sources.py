"""yolo:PATH and coco:PATH on small generated folders: what they read, each bad input, --skip-bad, the round trip."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convscope.data.boxes import BoxSet
from convscope.data.modalities.boxes import box_dataset_info, prepare_box_data
from convscope.data.sources.coco import read_coco
from convscope.data.sources.yolo import read_yolo, write_yolo
from convscope.errors import UserError
from tests.data.helpers import make_image

SIZE = (20, 30)  # height, width of every generated image
BOX = "0 0.5 0.5 0.4 0.2"  # centre of the image, 12 x 4 pixels


def make_yolo(root: Path, counts: dict[str, int] | None = None, names: object = ("cat", "dog")) -> Path:
    """``root/data.yaml`` with ``images/<split>/<i>.png`` and ``labels/<split>/<i>.txt`` (one box: class i % 2)."""
    counts = counts or {"train": 4, "val": 2}
    for split, count in counts.items():
        for i in range(count):
            make_image(root / "images" / split / f"{i}.png", seed=i, size=SIZE)
            label = root / "labels" / split / f"{i}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(f"{i % 2} 0.5 0.5 0.4 0.2\n")
    lines = [f"{split}: images/{split}" for split in counts] + [f"names: {json.dumps(names)}"]
    (root / "data.yaml").write_text("\n".join(lines) + "\n")
    return root


def test_yolo_reads_classes_splits_and_pixel_boxes(tmp_path):
    splits, skipped = read_yolo(make_yolo(tmp_path))
    assert skipped == [] and set(splits) == {"train", "val"}
    train = splits["train"]
    assert train.classes == ["cat", "dog"] and len(train) == 4 and train.image_size == SIZE
    # cx 0.5, w 0.4 of 30 pixels; cy 0.5, h 0.2 of 20 pixels.
    assert torch.allclose(train.targets(1)["boxes"], torch.tensor([[9.0, 8.0, 21.0, 12.0]]))
    assert train.targets(1)["labels"].tolist() == [1]
    assert train.files[0].endswith("images/train/0.png")


def test_yolo_names_map_path_key_txt_lists_and_polygons(tmp_path):
    root = make_yolo(tmp_path / "set", {"train": 2})
    (root / "labels" / "train" / "1.txt").write_text("1 0.2 0.3 0.6 0.3 0.6 0.9 0.2 0.9\n\n")  # a polygon
    (root / "train.txt").write_text("images/train/0.png\n./images/train/1.png\n")
    config = tmp_path / "elsewhere" / "mine.yaml"
    config.parent.mkdir()
    config.write_text("path: ../set\ntrain: train.txt\nnames:\n  0: cat\n  1: dog\n")
    splits, _ = read_yolo(config)
    assert splits["train"].classes == ["cat", "dog"] and len(splits["train"]) == 2
    assert torch.allclose(splits["train"].targets(1)["boxes"], torch.tensor([[6.0, 6.0, 18.0, 18.0]]))


def test_yolo_letterboxes_other_sizes(tmp_path):
    root = make_yolo(tmp_path, {"train": 1})
    splits, _ = read_yolo(root, size=(30, 30))
    # 20 x 30 letterboxed into 30 x 30: scale 1, 5 black rows above.
    assert torch.allclose(splits["train"].boxes[0, 0], torch.tensor([9.0, 13.0, 21.0, 17.0]))
    assert int(splits["train"].images[0, :, :5].max()) == 0
    squashed, _ = read_yolo(root, size=(40, 60), resize="squash")
    assert torch.allclose(squashed["train"].boxes[0, 0], torch.tensor([18.0, 16.0, 42.0, 24.0]))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0 0.95 0.5 0.4 0.2", "line 2: box .* lies outside the image"),
        ("0 0.5 0.5 0 0.2", "line 2: box has zero or negative size"),
        ("0 0.5 0.5 0.4 -0.2", "line 2: box has zero or negative size"),
        ("2 0.5 0.5 0.4 0.2", "line 2: class id 2 is out of range"),
        ("-1 0.5 0.5 0.4 0.2", "line 2: class id -1 is out of range"),
        ("0.5 0.5 0.5 0.4 0.2", "line 2: class id 0.5 is out of range"),
        ("0 0.5 0.5 0.4", "line 2: 4 fields"),
        ("0 0.5 0.5 0.4 0.2 0.3", "line 2: 6 fields"),
        ("0 a 0.5 0.4 0.2", "line 2: .* is not all numbers"),
        ("0 nan 0.5 0.4 0.2", "line 2: .* non-finite"),
    ],
)
def test_yolo_bad_label_lines_name_file_and_line(tmp_path, line, message):
    root = make_yolo(tmp_path)
    bad = root / "labels" / "train" / "2.txt"
    bad.write_text(f"{BOX}\n{line}\n")
    with pytest.raises(UserError, match=f"'{bad}' {message}"):
        read_yolo(root)
    splits, skipped = read_yolo(root, skip_bad=True)
    assert len(splits["train"]) == 3 and not any(f.endswith("train/2.png") for f in splits["train"].files)
    assert len(skipped) == 1 and str(bad) in skipped[0]


def test_yolo_missing_label_file_or_image_is_an_error_unless_skipped(tmp_path):
    root = make_yolo(tmp_path)
    (root / "labels" / "val" / "1.txt").unlink()
    with pytest.raises(UserError, match=r"'.*images/val/1.png' has no label file '.*labels/val/1.txt'"):
        read_yolo(root)
    splits, skipped = read_yolo(root, skip_bad=True)
    assert len(splits["val"]) == 1 and "no label file" in skipped[0]
    (root / "list.txt").write_text("images/train/0.png\nimages/train/gone.png\n")
    (root / "data.yaml").write_text("train: list.txt\nnames: [cat, dog]\n")
    with pytest.raises(UserError, match=r"image '.*gone.png' does not exist"):
        read_yolo(root)


def test_an_empty_label_file_is_an_image_without_objects(tmp_path):
    root = make_yolo(tmp_path, {"train": 2})
    (root / "labels" / "train" / "0.txt").write_text("")
    train = read_yolo(root)[0]["train"]
    assert train.targets(0)["boxes"].shape == (0, 4) and train.targets(1)["labels"].tolist() == [1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: images/train\nnames: [cat, dog\n", "data.yaml' line 3: malformed YAML"),
        ("train: images/train\n", "names must be a list"),
        ("train: images/train\nnames: {0: cat, 2: dog}\n", "expected the ids 0..1"),
        ("train: images/train\nnc: 3\nnames: [cat, dog]\n", "nc = 3 but names lists 2"),
        ("names: [cat, dog]\n", "no 'train:' entry"),
        ("train: images/nowhere\nnames: [cat, dog]\n", "neither a folder of images nor a .txt list"),
        ("- a list\n", "expected a YAML mapping"),
    ],
)
def test_yolo_bad_yaml(tmp_path, text, message):
    root = make_yolo(tmp_path)
    (root / "data.yaml").write_text(text)
    with pytest.raises(UserError, match=message):
        read_yolo(root)


def test_a_folder_without_a_yaml_says_it_needs_one(tmp_path):
    root = make_yolo(tmp_path)
    (root / "data.yaml").unlink()
    with pytest.raises(UserError, match=r"needs a data\.yaml naming the classes"):
        read_yolo(root)


def _box_set(n: int = 5) -> BoxSet:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 16, 24), dtype=torch.uint8, generator=generator)
    boxes = torch.zeros(n, 2, 4)
    labels = torch.full((n, 2), -1)
    for i in range(n):
        for k in range(i % 3):  # 0, 1 or 2 objects
            x0, y0 = float(i + k), float(2 * k)
            boxes[i, k] = torch.tensor([x0, y0, x0 + 5 + i, y0 + 7])
            labels[i, k] = (i + k) % 3
    return BoxSet(images, labels, ["a", "b", "c"], boxes)


def test_write_yolo_round_trips_through_yolo(tmp_path):
    train, test = _box_set(5), _box_set(3)
    config = write_yolo({"train": train, "test": test}, tmp_path / "out")
    splits, skipped = read_yolo(config)
    assert skipped == [] and set(splits) == {"train", "test"}
    for name, original in (("train", train), ("test", test)):
        read = splits[name]
        assert read.classes == original.classes and torch.equal(read.images, original.images)
        for i in range(len(original)):
            want, got = original.targets(i), read.targets(i)
            assert torch.equal(want["labels"], got["labels"])
            assert torch.allclose(want["boxes"], got["boxes"], atol=1e-3)


# Ultralytics replaces PIL.Image.open when imported (to read HEIF), which changes the errors of every later
# decode in the process: its checks run in a process of their own.
ULTRALYTICS_CHECK = """
import json, sys
from ultralytics.data import utils
data = utils.check_det_dataset(sys.argv[1], autodownload=False)
result = utils.verify_image_label((sys.argv[2], sys.argv[3], "", False, 3, 0, 0, False))
print(json.dumps({"nc": data["nc"], "names": data["names"], "train": str(data["train"]),
                  "boxes": list(result[1].shape), "message": result[-1]}))
"""


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None, reason="ultralytics is not installed")
def test_write_yolo_is_what_ultralytics_reads(tmp_path):
    config = write_yolo({"train": _box_set(4), "val": _box_set(2)}, tmp_path / "out")
    out = tmp_path / "out"
    image, label = out / "images" / "train" / "000002.png", out / "labels" / "train" / "000002.txt"
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(tmp_path / "settings")}
    completed = subprocess.run([sys.executable, "-c", ULTRALYTICS_CHECK, str(config), str(image), str(label)],
                               capture_output=True, text=True, env=env, check=False)  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    data = json.loads(completed.stdout.strip().splitlines()[-1])
    assert data["nc"] == 3 and data["names"] == {"0": "a", "1": "b", "2": "c"}
    assert Path(data["train"]) == (tmp_path / "out" / "images" / "train").resolve()
    # Ultralytics' own label check of one image: its boxes come back as written.
    assert data["boxes"] == [2, 5] and data["message"] == ""  # two boxes, no warning


def make_coco(root: Path, annotations: list[dict] | None = None, *, folder: str = "images") -> Path:
    """``root/instances_train.json`` over two 20 x 30 images in ``root/<folder>/``; categories with ids 7 and 3."""
    for i in range(2):
        make_image(root / folder / f"{i}.png", seed=i, size=SIZE)
    document = {
        "images": [{"id": 10 + i, "file_name": f"{i}.png", "width": SIZE[1], "height": SIZE[0]} for i in range(2)],
        "annotations": annotations
        if annotations is not None
        else [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [3, 2, 10, 5], "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [0, 0, 30, 20], "iscrowd": 1},
            {"id": 3, "image_id": 11, "category_id": 3, "bbox": [1.5, 4, 6, 6]},
        ],
        "categories": [{"id": 7, "name": "shoe"}, {"id": 3, "name": "bag"}],
    }
    file = root / "instances_train.json"
    file.write_text(json.dumps(document, indent=1))
    return file


def test_coco_reads_categories_in_id_order_and_drops_crowds(tmp_path):
    splits, skipped = read_coco(make_coco(tmp_path))
    train = splits["train"]
    assert skipped == [] and train.classes == ["bag", "shoe"] and len(train) == 2
    assert torch.equal(train.targets(0)["boxes"], torch.tensor([[3.0, 2.0, 13.0, 7.0]]))
    assert train.targets(0)["labels"].tolist() == [1]  # shoe (id 7) after bag (id 3); the crowd box is left out
    assert torch.equal(train.targets(1)["boxes"], torch.tensor([[1.5, 4.0, 7.5, 10.0]]))


def test_coco_finds_a_folder_of_split_jsons_and_images_beside_them(tmp_path):
    make_coco(tmp_path, folder=".")
    (tmp_path / "instances_val.json").write_text((tmp_path / "instances_train.json").read_text())
    splits, _ = read_coco(tmp_path)
    assert set(splits) == {"train", "val"} and len(splits["val"]) == 2


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        ({"image_id": 10, "category_id": 5, "bbox": [1, 1, 4, 4]}, r"annotations\[1\]: category_id 5 is not among"),
        ({"image_id": 10, "category_id": 3, "bbox": [25, 1, 10, 4]}, r"annotations\[1\] in '0.png' .* outside"),
        ({"image_id": 10, "category_id": 3, "bbox": [1, 1, 0, 4]}, r"annotations\[1\] .* zero or negative size"),
        ({"image_id": 10, "category_id": 3, "bbox": [1, 1, 4]}, r"annotations\[1\]: bbox is \[1, 1, 4\]"),
        ({"image_id": 10, "category_id": 3, "bbox": [1, "a", 4, 4]}, r"annotations\[1\]: bbox is"),
        ({"image_id": 99, "category_id": 3, "bbox": [1, 1, 4, 4]}, r"annotations\[1\]: image_id 99 is not in images"),
        ({"category_id": 3, "bbox": [1, 1, 4, 4]}, r"annotations\[1\]: no 'image_id'"),
    ],
)
def test_coco_bad_annotations_name_the_element(tmp_path, annotation, message):
    good = {"image_id": 11, "category_id": 7, "bbox": [1, 1, 4, 4]}
    file = make_coco(tmp_path, [good, annotation])
    with pytest.raises(UserError, match=f"'{file}' {message}"):
        read_coco(file)
    splits, skipped = read_coco(file, skip_bad=True)
    assert len(skipped) == 1 and "annotations[1]" in skipped[0]
    assert splits["train"].targets(len(splits["train"]) - 1)["labels"].tolist() == [1]  # image 11 kept


def test_coco_malformed_json_and_missing_image(tmp_path):
    file = make_coco(tmp_path)
    text = file.read_text()
    file.write_text(text.replace('"file_name"', "file_name", 1))
    with pytest.raises(UserError, match=r"instances_train.json' line 5 column \d+: malformed JSON"):
        read_coco(file)
    file.write_text(text)
    (tmp_path / "images" / "1.png").unlink()
    with pytest.raises(UserError, match=r"images\[1\]: image '1.png' not found"):
        read_coco(file)
    splits, skipped = read_coco(file, skip_bad=True)
    assert len(splits["train"]) == 1 and "images[1]" in skipped[0]


def test_data_info_describes_boxes(tmp_path):
    root = make_yolo(tmp_path)
    (root / "labels" / "train" / "3.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    info = box_dataset_info(f"yolo:{root}")
    assert info["labels"] == "boxes" and info["classes"] == ["cat", "dog"] and info["image_size"] == list(SIZE)
    assert info["splits"]["train"] == {"count": 3, "objects_per_class": {"cat": 2, "dog": 1}, "max_boxes": 1}
    assert len(info["skipped"]) == 1 and "class id 7" in info["skipped"][0]


def test_a_val_split_without_test_is_the_test_split_and_valid_comes_from_train(tmp_path):
    data = prepare_box_data(f"yolo:{make_yolo(tmp_path, {'train': 10, 'val': 3})}", valid_fraction=0.2,
                            test_fraction=0.1, seed=0)  # fmt: skip
    assert (len(data.train), len(data.valid), len(data.test)) == (8, 2, 3)
    assert all("images/val/" in f for f in data.test.files)
    assert not set(data.valid.files) & set(data.train.files)
    data = prepare_box_data(f"yolo:{make_yolo(tmp_path / 'b', {'train': 10, 'val': 3, 'test': 2})}",
                            valid_fraction=0.2, test_fraction=0.1, seed=0)  # fmt: skip
    assert (len(data.train), len(data.valid), len(data.test)) == (10, 3, 2)
