"""A run directory's config.toml written before the package layout of issue 19 still trains."""

from pathlib import Path

from tests.cli_helpers import cli
from tests.data.helpers import make_idx

OLD_CONFIG = Path(__file__).parent / "fixtures" / "config-before-layout.toml"


def test_a_config_toml_from_before_the_layout_trains(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CONVSCOPE_FASHION_MNIST", str(make_idx(tmp_path / "fashion", n=40, n_test=10)))
    code, out, err = cli(capsys, "train", "--recipe", OLD_CONFIG, "--out", tmp_path / "run", "--epochs", "1",
                         "--quiet", "--set", "model.widths=[4,8,8]")  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "run" / "model.safetensors").is_file() and "test accuracy" in out
