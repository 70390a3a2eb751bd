import pickle

import pytest
import torch
from torch import nn

from convscope.engine import load_checkpoint, load_model_state, save_checkpoint
from convscope.errors import UserError


def test_roundtrip_with_weights_only(tmp_path):
    model = nn.Linear(3, 2)
    path = tmp_path / "ck" / "last.pt"
    save_checkpoint(path, {"model": model.state_dict(), "epoch": 2, "names": ["a", "b"], "best": None})
    state = load_checkpoint(path)
    assert state["epoch"] == 2 and state["names"] == ["a", "b"]
    assert torch.equal(state["model"]["weight"], model.weight)
    # The file itself loads under torch's safe loader: no code can run from it.
    torch.load(path, weights_only=True)
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary left behind


def test_crash_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(UserError, match=r"cannot write .*last\.pt: disk full"):  # one error line naming the file
        save_checkpoint(path, {"epoch": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_refuses_to_save_what_weights_only_cannot_load(tmp_path):
    with pytest.raises(TypeError, match=r"state\['extra'\]\['where'\] is a PosixPath|is a WindowsPath"):
        save_checkpoint(tmp_path / "x.pt", {"extra": {"where": tmp_path}})


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize(
    "content", [b"", b"not a checkpoint at all", pickle.dumps(Evil(), protocol=2)], ids=["empty", "text", "code"]
)
def test_junk_files_are_user_errors(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=r"bad.pt is not a convscope checkpoint") as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)


def test_truncated_and_foreign_files(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": nn.Linear(30, 20).state_dict()})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"last.pt is not a convscope checkpoint or is truncated"):
        load_checkpoint(path)
    torch.save({"weight": torch.zeros(2)}, path)  # a plain state dict, loadable but not ours
    with pytest.raises(UserError, match=r"no 'convscope-checkpoint/1' marker"):
        load_checkpoint(path)
    with pytest.raises(UserError, match=r"no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_wrong_model_is_a_user_error(tmp_path):
    path = tmp_path / "best.pt"
    other = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3), nn.Linear(3, 3))
    mine = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 3))
    with pytest.raises(UserError) as e:
        load_model_state(mine, other.state_dict(), path)
    message = str(e.value)
    assert message.startswith(f"{path} was written for a different model")
    assert "unexpected keys: 2.weight, 2.bias" in message
    assert "0.weight (8, 4) vs (5, 4)" in message
    with pytest.raises(UserError, match=r"missing keys: 2.weight, 2.bias"):
        load_model_state(other, mine.state_dict(), path)


def test_matching_model_loads(tmp_path):
    source, target = nn.Linear(4, 2), nn.Linear(4, 2)
    load_model_state(target, source.state_dict(), tmp_path / "x.pt")
    assert torch.equal(target.weight, source.weight)
