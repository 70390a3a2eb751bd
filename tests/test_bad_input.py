"""The table of bad input: every kind of damaged file, bad value and wrong argument the command line meets.

Each case runs ``convscope`` in this process and asserts the contract of :mod:`convscope.errors`: exactly one
``error:`` line naming what is wrong, exit status 2, no traceback. README's Errors section counts these kinds.
One tiny trained run (lenet5, one epoch on 16 images of 32x32) serves the whole module; a case that damages a
run damages its own copy.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from convscope.cli import main
from tests.cli_helpers import cli, one_error_line
from tests.data.helpers import make_archive, make_csv_folder, make_idx, make_image, make_imagefolder

QUICK = ["--model", "lenet5", "--batch-size", "4", "--precision", "fp32", "--quiet"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder (``pets``), a good image (``cat.png``) and a trained run (``run``), shared read-only."""
    root = tmp_path_factory.mktemp("bad-input")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVSCOPE_HOME", str(root / "home"))
        pets = make_imagefolder(root / "pets", ("cat", "dog"), per_class=8, size=(32, 32))
        make_image(root / "cat.png", size=(32, 32))
        assert (
            main(["train", "--data", f"imagefolder:{pets}", "--out", str(root / "run"), *QUICK, "--epochs", "1"]) == 0
        )
    return root


@dataclass
class Scene:
    """One case's own folder, beside the shared world."""

    world: Path
    tmp: Path

    @property
    def pets(self) -> Path:
        return self.world / "pets"

    @property
    def image(self) -> Path:
        return self.world / "cat.png"

    def run(self) -> Path:
        """A copy of the trained run to damage."""
        return Path(shutil.copytree(self.world / "run", self.tmp / "run"))

    def damaged(self, name: str, content: bytes | Callable[[bytes], bytes]) -> Path:
        """A copy of the run with file ``name`` replaced by ``content`` (or ``content(original)``)."""
        run = self.run()
        path = run / name
        original = path.read_bytes() if path.exists() else b""
        path.write_bytes(content(original) if callable(content) else content)
        return run

    def train(self, *extra: object, data: str | None = None, epochs: bool = True) -> list[object]:
        spec = data if data is not None else f"imagefolder:{self.pets}"
        return ["train", "--data", spec, "--out", self.tmp / "out", *QUICK, *(["--epochs", "1"] if epochs else []),
                *extra]  # fmt: skip

    def file(self, name: str, content: bytes | str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def folder(self, classes: tuple[str, ...] = ("a", "b"), per_class: int = 4, **kwargs: object) -> Path:
        return make_imagefolder(self.tmp / "folder", classes, per_class=per_class, size=(32, 32), **kwargs)


def truncated(original: bytes) -> bytes:
    return original[: len(original) // 2]


def header_corrupted(original: bytes) -> bytes:
    """A safetensors file whose JSON header is no longer JSON."""
    return original[:8] + b"#" + original[9:]


def a_pickle(_: bytes) -> bytes:
    """A plain pickled state dict, as torch.save wrote model files before safetensors."""
    return pickle.dumps({"weight": torch.zeros(2)})


class Exploit:
    """A pickle that would run a command when loaded: convscope must refuse to unpickle it."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, ("touch /tmp/convscope-pwned",)


def uses_run(command: str, scene: Scene, run: Path) -> list[object]:
    """``command`` on ``run`` with the arguments it needs to reach the run's files."""
    image = scene.image
    return {
        "evaluate": ["evaluate", run],
        "predict": ["predict", run, image],
        "explain": ["explain", run, image, "--method", "saliency", "--out", scene.tmp / "x.png"],
        "report": ["report", run],
        "export": ["export", run, "--format", "onnx", "--out", scene.tmp / "m.onnx"],
    }[command]


COMMANDS = ["evaluate", "predict", "explain", "report", "export"]
Build = Callable[[Scene], list[object]]
CASES: list[tuple[str, Build, str]] = []


def add(kind: str, build: Build, fragment: str = "") -> None:
    CASES.append((kind, build, fragment))


# --- damaged run directories (issue 22: a SafetensorError traceback in five commands) ------------------------------

for command in COMMANDS:
    for how, damage in (
        ("truncated", truncated),
        ("with a corrupted header", header_corrupted),
        ("a pickle", a_pickle),
    ):
        add(f"{command}: model.safetensors {how}",
            lambda s, c=command, d=damage: uses_run(c, s, s.damaged("model.safetensors", d)),
            "model.safetensors")  # fmt: skip

add(
    "evaluate: model.safetensors empty",
    lambda s: ["evaluate", s.damaged("model.safetensors", b"")],
    "model.safetensors",
)
add("evaluate: model.safetensors missing", lambda s: ["evaluate", _without(s.run(), "model.safetensors")], "model")
add("evaluate: run.json not JSON", lambda s: ["evaluate", s.damaged("run.json", b'{"classes": [')], "run.json")
add("evaluate: run.json a list", lambda s: ["evaluate", s.damaged("run.json", b"[1, 2]")], "run.json")
add("evaluate: run.json without its keys", lambda s: ["evaluate", s.damaged("run.json", b"{}")], "run.json")
add("evaluate: run.json not UTF-8", lambda s: ["evaluate", s.damaged("run.json", b'{"a": "\xff\xfe"}')], "run.json")
add("evaluate: run.json missing", lambda s: ["evaluate", _without(s.run(), "run.json")], "run.json")
add("predict: run.json without the image size", lambda s: ["predict", s.damaged("run.json", _drop_key("image_size")),
                                                            "x.png"], "run.json")  # fmt: skip
add("evaluate: config.toml not UTF-8", lambda s: ["evaluate", s.damaged("config.toml", lambda b: b + b'x = "\xff"\n')],
    "config.toml")  # fmt: skip
add("evaluate: config.toml in UTF-16", lambda s: ["evaluate", s.damaged("config.toml",
    lambda b: b.decode().encode("utf-16"))], "config.toml")  # fmt: skip
add(
    "evaluate: config.toml not TOML", lambda s: ["evaluate", s.damaged("config.toml", b"[data\nname = ")], "config.toml"
)
add("evaluate: config.toml with a bad value", lambda s: ["evaluate", s.damaged("config.toml",
    lambda b: b.replace(b"epochs = 1\n", b'epochs = "one"\n'))], "config.toml")  # fmt: skip
add("evaluate: config.toml missing", lambda s: ["evaluate", _without(s.run(), "config.toml")], "config.toml")
add("evaluate: the run directory is a file", lambda s: ["evaluate", s.file("run", "not a run")], "run")
add("evaluate: no such run directory", lambda s: ["evaluate", s.tmp / "nowhere"], "nowhere")
add("evaluate: weights of another model", lambda s: ["evaluate", s.damaged("model.safetensors",
    lambda _: _other_weights())], "model")  # fmt: skip
add("report: summary.json not JSON", lambda s: ["report", s.damaged("summary.json", b"{")], "summary.json")
add("plot: metrics.csv not UTF-8", lambda s: ["plot", s.damaged("metrics.csv", b"\xff\xfe\x00bad")], "metrics.csv")
add("plot: metrics.csv missing", lambda s: ["plot", _without(s.run(), "metrics.csv")], "metrics.csv")
add("train --resume: last.pt truncated", lambda s: ["train", "--resume", "--out",
    s.damaged("checkpoints/last.pt", truncated)], "last.pt")  # fmt: skip
add("train --resume: last.pt random bytes", lambda s: ["train", "--resume", "--out",
    s.damaged("checkpoints/last.pt", b"Q")], "last.pt")  # fmt: skip
add("train --resume: last.pt a pickle that runs code", lambda s: ["train", "--resume", "--out",
    s.damaged("checkpoints/last.pt", pickle.dumps(Exploit()))], "last.pt")  # fmt: skip
add("train --resume: last.pt missing", lambda s: ["train", "--resume", "--out",
    _without(s.run(), "checkpoints/last.pt")], "checkpoint")  # fmt: skip
add("train --resume: no such run", lambda s: ["train", "--resume", "--out", s.tmp / "nowhere"], "nowhere")
add("train: --out holds a run already", lambda s: [*s.train()[:3], "--out", s.run(), *QUICK], "--resume")


def _drop_key(key: str) -> Callable[[bytes], bytes]:
    """run.json's text with one field left out (found by `make fuzz`: a KeyError, once)."""
    return lambda original: json.dumps({k: v for k, v in json.loads(original).items() if k != key}).encode()


def _without(run: Path, name: str) -> Path:
    (run / name).unlink()
    return run


def _other_weights() -> bytes:
    from safetensors.torch import save

    return save({"conv.weight": torch.zeros(3, 3)})


# --- recipe values (issue 22: accepted silently, or a traceback) --------------------------------------------------

VALUES = [
    ("optim.lr=inf", "optim.lr"), ("optim.lr=nan", "optim.lr"), ("optim.lr=-1", "optim.lr"),
    ("optim.lr=fast", "optim.lr"), ("optim.weight_decay=inf", "optim.weight_decay"),
    ("optim.weight_decay=-0.1", "optim.weight_decay"), ("optim.momentum=nan", "optim.momentum"),
    ("optim.name=rmsprop", "rmsprop"), ("optim.scheduler=sometimes", "sometimes"),
    ("optim.warmup_fraction=2", "optim.warmup_fraction"), ("optim.step_epochs=0", "optim.step_epochs"),
    ("data.valid_fraction=nan", "data.valid_fraction"), ("data.valid_fraction=1", "data.valid_fraction"),
    ("data.valid_fraction=-0.1", "data.valid_fraction"), ("data.test_fraction=1.5", "data.test_fraction"),
    ("data.subset=-5", "data.subset"), ("data.subset=2.5", "data.subset"),
    ("data.eval_batch_size=0", "data.eval_batch_size"), ("data.per_class=-1", "data.per_class"),
    ("data.label_fraction=0", "data.label_fraction"), ("data.label_fraction=2", "data.label_fraction"),
    ("data.image_size=-3", "image_size"), ("data.image_size=[1, 2, 3]", "image_size"),
    ("data.resize=stretch", "stretch"), ("data.normalize=sometimes", "sometimes"),
    ("data.classes=[\"cat\", \"lion\"]", "lion"), ("data.skip_bad=maybe", "data.skip_bad"),
    ("train.epochs=1e20", "train.epochs"), ("train.epochs=0", "train.epochs"), ("train.epochs=-1", "train.epochs"),
    ("train.epochs=100000000000", "train.epochs"), ("train.batch_size=0", "train.batch_size"),
    ("train.seed=-1", "train.seed"), ("train.seed=99999999999999999999", "train.seed"),
    ("train.precision=fp8", "fp8"), ("train.device=tpu", "tpu"), ("train.grad_clip=nan", "train.grad_clip"),
    ("train.early_stopping=soon", "soon"), ("train.monitor_mode=up", "up"), ("train.loggers=[\"wandb\"]", "wandb"),
    ("train.divergence_factor=inf", "train.divergence_factor"),
    ("augment.rotation=nan", "augment.rotation"), ("augment.crop_padding=-2", "augment.crop_padding"),
    ("augment.crop_padding_mode=mirror", "mirror"), ("augment.hflip=2", "augment.hflip"),
    ("transfer.init=/nowhere/weights.pth", "nowhere"), ("transfer.unfreeze_at=nan", "transfer.unfreeze_at"),
    ("model.widths=1979-05-27", "model.widths"), ("model.widths={a = 1}", "model.widths"),
    ("model.name=nonet", "nonet"), ("model.depth=3", "depth"), ("task.name=nope", "nope"),
    ("train.epochz=3", "epochz"), ("trian.epochs=3", "trian"), ("novalue", "KEY=VALUE"), ("=3", "KEY=VALUE"),
    ("epochs=3", "section.field"), ("name=a/b", "name"),
]  # fmt: skip
for setting, fragment in VALUES:
    add(f"--set {setting}", lambda s, v=setting: s.train("--set", v, epochs="train.epochs" not in v), fragment)

FLAGS = [
    (["--epochs", "abc"], "train.epochs"), (["--epochs", "1.5"], "train.epochs"), (["--batch-size", "-1"], "batch"),
    (["--lr", "abc"], "optim.lr"), (["--precision", "fp8"], "fp8"), (["--device", "tpu"], "tpu"),
    (["--seed", "x"], "train.seed"), (["--nproc", "abc"], "nproc"), (["--model", "nonet"], "nonet"),
    (["--frobnicate"], "frobnicate"), (["--recipe", "nope"], "nope"),
]  # fmt: skip
for flags, fragment in FLAGS:
    add(f"train {' '.join(flags)}", lambda s, f=flags: s.train(*f), fragment)

OTHER_COMMANDS: list[tuple[str, Build, str]] = [
    ("an unknown command", lambda s: ["frobnicate"], "frobnicate"),
    ("no command", lambda s: [], "command"),
    ("evaluate without a run", lambda s: ["evaluate"], "run"),
    ("predict without inputs", lambda s: ["predict", s.world / "run"], "INPUT"),
    ("predict: a missing image", lambda s: ["predict", s.world / "run", s.tmp / "none.png"], "none.png"),
    ("predict: a text file named .png", lambda s: ["predict", s.world / "run", s.file("t.png", "hello")], "t.png"),
    ("predict: an empty .jpg", lambda s: ["predict", s.world / "run", s.file("e.jpg", b"")], "e.jpg"),
    ("predict: a truncated PNG", lambda s: ["predict", s.world / "run", s.file("h.png", s.image.read_bytes()[:60])],
     "h.png"),
    ("predict: a PNG with damaged pixel data", lambda s: ["predict", s.world / "run", s.file("d.png",
     _flip(s.image.read_bytes(), 70))], "d.png"),
    ("predict --topk abc", lambda s: ["predict", s.world / "run", s.image, "--topk", "abc"], "topk"),
    ("export without --format", lambda s: ["export", s.world / "run"], "format"),
    ("export --format pdf", lambda s: ["export", s.world / "run", "--format", "pdf"], "pdf"),
    ("explain --method nope", lambda s: ["explain", s.world / "run", s.image, "--method", "nope"], "nope"),
    ("explain --target an unknown class", lambda s: ["explain", s.world / "run", s.image, "--method", "saliency",
     "--target", "lion", "--out", s.tmp / "x.png"], "lion"),
    ("explain --layer an unknown layer", lambda s: ["explain", s.world / "run", s.image, "--method", "gradcam",
     "--layer", "nolayer", "--out", s.tmp / "x.png"], "nolayer"),
    ("explain: a corrupt image", lambda s: ["explain", s.world / "run", s.file("c.png", b"\x89PNG\r\n\x1a\nxx"),
     "--method", "saliency", "--out", s.tmp / "x.png"], "c.png"),
    ("evaluate --data: other classes", lambda s: ["evaluate", s.world / "run", "--data",
     f"imagefolder:{s.folder(('x', 'y', 'z'))}"], "class"),
    ("models --input-size abc", lambda s: ["models", "--input-size", "abc"], "input-size"),
    ("models --classes abc", lambda s: ["models", "--classes", "abc"], "classes"),
    ("data info: an unknown data set", lambda s: ["data", "info", "nope"], "nope"),
    ("data import: a missing archive", lambda s: ["data", "import", "x", s.tmp / "none.tar.gz"], "none.tar.gz"),
    ("data import: a corrupt archive", lambda s: ["data", "import", "x", s.file("bad.tar.gz", b"\x1f\x8b garbage")],
     "bad.tar.gz"),
    ("data import: an archive with no images", lambda s: ["data", "import", "x", make_archive(_text_folder(s))],
     "image"),
    ("lr-find --steps abc", lambda s: ["lr-find", "--data", f"imagefolder:{s.pets}", "--steps", "abc"], "steps"),
    ("recipes --recipe nope --keys", lambda s: ["recipes", "--keys", "--recipe", "nope"], "nope"),
]  # fmt: skip
CASES.extend(OTHER_COMMANDS)


def _flip(data: bytes, index: int) -> bytes:
    damaged = bytearray(data)
    damaged[index] ^= 0x10
    return bytes(damaged)


def _text_folder(scene: Scene) -> Path:
    folder = scene.tmp / "texts"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "readme.txt").write_text("no images here")
    return folder


# --- recipe files and data (issue 22: non-UTF-8 recipe, one class, duplicate ids, tiny splits, constant channels) --

RECIPE = 'name = "r"\n[data]\nvalid_fraction = 0.25\n'
add("recipe file not UTF-8", lambda s: s.train("--recipe", s.file("r.toml", RECIPE.encode() + b"# \xff\n")), "r.toml")
add("recipe file in UTF-16", lambda s: s.train("--recipe", s.file("r.toml", RECIPE.encode("utf-16"))), "r.toml")
add("recipe file not TOML", lambda s: s.train("--recipe", s.file("r.toml", "[data\n")), "r.toml")
add("recipe file: an unknown section", lambda s: s.train("--recipe", s.file("r.toml", "[dta]\n")), "dta")
add("recipe file: a table where a value goes", lambda s: s.train("--recipe", s.file("r.toml", "[data.subset]\n")),
    "data")  # fmt: skip
add("recipe file: a value where a table goes", lambda s: s.train("--recipe", s.file("r.toml", "data = 3\n")), "data")
add("recipe file: a date as a value", lambda s: s.train("--recipe", s.file("r.toml", "[optim]\nlr = 1979-05-27\n")),
    "optim.lr")  # fmt: skip
add("recipe file missing", lambda s: s.train("--recipe", s.tmp / "none.toml"), "none.toml")
add("recipe file is a directory", lambda s: s.train("--recipe", _mkdir(s.tmp / "dir.toml")), "dir.toml")

add("data: an unknown data set name", lambda s: s.train(data="nosuchdata"), "nosuchdata")
add("data: an unknown spec kind", lambda s: s.train(data="foo:bar"), "foo")
add("data: imagefolder of a missing folder", lambda s: s.train(data=f"imagefolder:{s.tmp / 'nowhere'}"), "nowhere")
add("data: imagefolder of a file", lambda s: s.train(data=f"imagefolder:{s.file('f.txt', 'x')}"), "f.txt")
add("data: an empty folder", lambda s: s.train(data=f"imagefolder:{_mkdir(s.tmp / 'empty')}"), "empty")
add("data: a class folder without images", lambda s: s.train(data=f"imagefolder:{_empty_class(s)}"), "b")
add("data: one class", lambda s: s.train(data=f"imagefolder:{s.folder(('only',), per_class=8)}"), "class")
add("data: one class of constant images", lambda s: s.train(data=f"imagefolder:{_constant(s)}"), "")
add("data: a corrupt image in the folder", lambda s: s.train(data=f"imagefolder:{_with_bad_image(s)}"), "bad.png")
add("data: a PNG with damaged pixel data in the folder", lambda s: s.train(data=f"imagefolder:{_flipped_image(s)}"),
    "bad.png")  # fmt: skip
add("data: images of different sizes with a too small image_size", lambda s: s.train("--set", "data.image_size=2",
    data=f"imagefolder:{s.pets}"), "")  # fmt: skip
add("data: csv with duplicate ids and conflicting labels", lambda s: s.train(data=f"csv:{_duplicate_csv(s)}"),
    "0000abcd")  # fmt: skip
add("data: csv with a missing image", lambda s: s.train(data=f"csv:{_csv_missing_image(s)}"), "0001abcd")
add("data: csv without a label column", lambda s: s.train(data=f"csv:{_csv_rewritten(s, 'id,kind')}"), "label")
add("data: csv with only a header", lambda s: s.train(data=f"csv:{_csv_only_header(s)}"), "csv")
add("data: csv not UTF-8", lambda s: s.train(data=f"csv:{_csv_not_utf8(s)}"), "csv")
add("data: csv of a missing folder", lambda s: s.train(data=f"csv:{s.tmp / 'nowhere'}"), "nowhere")
add("data: mnist with a truncated file", lambda s: s.train(data=f"mnist:{_truncated_idx(s)}"), "idx")
add("data: mnist of a missing folder", lambda s: s.train(data=f"mnist:{s.tmp / 'nowhere'}"), "nowhere")
add("data: textcsv of a missing file", lambda s: s.train(data=f"textcsv:{s.tmp / 'none.csv'}"), "none.csv")
add("data: textcsv without the text column", lambda s: s.train("--recipe", "spanish-names",
    data="textcsv:" + str(s.file("t.csv", "name,label\nana,f\nluis,m\n"))), "text")  # fmt: skip


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _empty_class(scene: Scene) -> Path:
    folder = scene.folder()
    for image in (folder / "b").iterdir():
        image.unlink()
    return folder


def _constant(scene: Scene) -> Path:
    from PIL import Image

    folder = scene.tmp / "constant" / "red"
    folder.mkdir(parents=True)
    for index in range(8):
        Image.new("RGB", (32, 32), (200, 0, 0)).save(folder / f"{index}.png")
    return folder.parent


def _with_bad_image(scene: Scene, flip: bool = False) -> Path:
    folder = scene.folder()
    good = (folder / "a" / "000.png").read_bytes()
    (folder / "a" / "bad.png").write_bytes(_flip(good, 70) if flip else good[:50])
    return folder


def _flipped_image(scene: Scene) -> Path:
    return _with_bad_image(scene, flip=True)


def _csv_not_utf8(scene: Scene) -> Path:
    return _csv_rewritten(scene, "id,label", extra=b"\xff,1")


def _duplicate_csv(scene: Scene) -> Path:
    root = make_csv_folder(scene.tmp / "histo", labels=["0", "1"] * 4, size=(32, 32))
    table = root / "train_labels.csv"
    table.write_text(table.read_text() + "0000abcd,1\n")  # the first id again, with the other label
    return root


def _csv_missing_image(scene: Scene) -> Path:
    root = make_csv_folder(scene.tmp / "histo", labels=["0", "1"] * 4, size=(32, 32))
    next((root / "train").glob("0001abcd.*")).unlink()
    return root


def _csv_rewritten(scene: Scene, header: str, extra: bytes = b"") -> Path:
    root = make_csv_folder(scene.tmp / "histo", labels=["0", "1"] * 4, size=(32, 32))
    table = root / "train_labels.csv"
    rows = table.read_text().splitlines()
    table.write_bytes(("\n".join([header, *rows[1:]]) + "\n").encode() + extra)
    return root


def _csv_only_header(scene: Scene) -> Path:
    root = make_csv_folder(scene.tmp / "histo", labels=["0", "1"], size=(32, 32))
    (root / "train_labels.csv").write_text("id,label\n")
    return root


def _truncated_idx(scene: Scene) -> Path:
    root = make_idx(scene.tmp / "mnist", n=20, n_test=10, gz=False)
    images = root / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:100])
    return root


@pytest.mark.parametrize(("kind", "build", "fragment"), CASES, ids=[kind for kind, _, _ in CASES])
def test_bad_input_is_one_error_line(capsys, world: Path, tmp_path: Path, kind: str, build: Build, fragment: str):
    argv = build(Scene(world, tmp_path))
    capsys.readouterr()  # what building the case printed
    code, _, err = cli(capsys, *argv)
    line = one_error_line(err)
    assert code == 2, (kind, err)
    assert fragment in line, (kind, line)


def test_the_table_counts_at_least_100_kinds():
    kinds = [kind for kind, _, _ in CASES]
    assert len(set(kinds)) == len(kinds) >= 100


def test_a_pickle_under_a_checkpoint_runs_no_code(capsys, world: Path, tmp_path: Path):
    marker = Path("/tmp/convscope-pwned")
    marker.unlink(missing_ok=True)
    run = Scene(world, tmp_path).damaged("checkpoints/last.pt", pickle.dumps(Exploit()))
    code, _, err = cli(capsys, "train", "--resume", "--out", run)
    assert code == 2 and "last.pt" in one_error_line(err)
    assert not marker.exists()


def test_a_description_with_a_newline_trains_and_the_run_reads_back(capsys, world: Path, tmp_path: Path):
    scene = Scene(world, tmp_path)
    code, _, err = cli(capsys, *scene.train("--set", 'description="a\\nb"'))
    assert code == 0, err
    code, out, err = cli(capsys, "evaluate", tmp_path / "out")
    assert code == 0, err
    assert "accuracy" in out


def test_a_damaged_model_is_rewritten_by_resume_and_nothing_is_lost(capsys, world: Path, tmp_path: Path):
    run = Scene(world, tmp_path).damaged("model.safetensors", truncated)
    code, _, err = cli(capsys, "evaluate", run)
    assert code == 2 and "--resume" in one_error_line(err)
    code, _, err = cli(capsys, "train", "--resume", "--out", run)
    assert code == 0, err
    code, out, err = cli(capsys, "evaluate", run)
    assert code == 0 and "accuracy" in out, err
