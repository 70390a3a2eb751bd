from pathlib import Path

import pytest

from convscope.config import list_recipes, load_recipe, recipe_from_dict, to_toml, write_recipe_toml
from convscope.errors import UserError


def test_defaults_file_then_overrides(tmp_path: Path):
    path = tmp_path / "r.toml"
    path.write_text('[train]\nepochs = 7\nbatch_size = 64\n[optim]\nname = "sgd"\nlr = 0.5\n[model]\nname = "lenet5"\n')
    recipe = load_recipe(str(path), {"train.epochs": "2", "model.width": "3", "optim.nesterov": "true"})
    assert recipe.train.epochs == 2  # override beats file
    assert recipe.train.batch_size == 64  # file beats default
    assert recipe.optim.lr == 0.5
    assert recipe.optim.nesterov is True
    assert recipe.model.name == "lenet5"
    assert recipe.model.options == {"width": 3}
    assert recipe.name == "r"


def test_int_is_accepted_where_a_float_is_expected():
    recipe = load_recipe(None, {"optim.lr": "1"})
    assert recipe.optim.lr == 1.0 and isinstance(recipe.optim.lr, float)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train.epochs", "abc", "train.epochs: expected an integer"),
        ("train.epochs", "1.5", "expected an integer"),
        ("train.epochz", "1", "unknown key train.'epochz'"),
        ("trian.epochs", "1", "unknown section 'trian'"),
        ("epochs", "1", "expected section.field"),
        ("optim.nesterov", "3", "expected true or false"),
    ],
)
def test_bad_override_names_the_key(key: str, value: str, message: str):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_recipe(None, {key: value})


def test_unknown_section_in_file(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text("[traning]\nepochs = 1\n")
    with pytest.raises(UserError, match="unknown recipe section 'traning'"):
        load_recipe(str(path))


def test_invalid_toml_names_the_file(tmp_path: Path):
    path = tmp_path / "broken.toml"
    path.write_text("[train\n")
    with pytest.raises(UserError, match=r"broken\.toml"):
        load_recipe(str(path))


def test_unknown_recipe_lists_the_shipped_ones():
    with pytest.raises(UserError, match="fashion-mnist"):
        load_recipe("no-such-recipe")


def test_every_shipped_recipe_resolves_and_round_trips(tmp_path: Path):
    names = [name for name, _ in list_recipes()]
    assert {"fashion-mnist", "cifar10", "seed004-selu", "seed003-cifar-cnn"} <= set(names)
    for name in names:
        recipe = load_recipe(name)
        assert recipe.description
        out = tmp_path / f"{name}.toml"
        write_recipe_toml(recipe, out)
        again = load_recipe(str(out))
        assert again.to_dict() == recipe.to_dict()


def test_to_toml_escapes_strings():
    import tomllib

    text = to_toml({"description": 'a "quoted" \\ path', "data": {"name": "imagefolder:C:\\x"}})
    assert tomllib.loads(text)["data"]["name"] == "imagefolder:C:\\x"


def test_section_must_be_a_table():
    with pytest.raises(UserError, match="expected a table"):
        recipe_from_dict({"train": 3}, source="x.toml")


@pytest.mark.parametrize("name", [name for name, _ in list_recipes() if load_recipe(name).task.name == "classify"])
def test_image_classification_recipes_build_their_task_and_model(name: str):
    """Task and model options are checked when built, not when the recipe is read: build them on 3 x 64 x 64."""
    from convscope import api
    from convscope.data.modalities import get_modality

    recipe = load_recipe(name)
    info = {"classes": [f"c{i}" for i in range(10)], "channels": 3, "image_size": [64, 64]}
    task = api.build_task(recipe, info)
    model = api.build_model(recipe, info, get_modality(task.modality))
    assert sum(p.numel() for p in model.parameters()) > 0


def test_importing_config_loads_no_torch():
    """config.py is a leaf: reading a recipe needs neither torch nor the data, engine or model modules."""
    import subprocess
    import sys

    code = "import sys, convscope.config; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'matplotlib', 'numpy')))"  # noqa: E501
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
