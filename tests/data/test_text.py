import re
from pathlib import Path

import pytest
import torch

from convscope.config import DataConfig, Recipe
from convscope.data.modalities import get_modality
from convscope.data.modalities.text import TextLoader, Vocabulary, prepare_text_data
from convscope.data.sources.text import LabelledText, merge_labels, normalise, open_texts
from convscope.errors import UserError

NAMES = {
    "male": "name,frequency,mean_age\nJOSE,100,50\nANDREA,10,30\nALEX,5,20\nJUAN CARLOS,40,45\n",
    "female": "name,frequency,mean_age\nMARIA,200,48\nANDREA,90,25\nALEX,5,21\nANA BELEN,30,40\n",
}


def write_csv(path: Path, header: str, rows: list[tuple[str, str]]) -> Path:
    path.write_text(header + "\n" + "".join(f"{a},{b}\n" for a, b in rows), encoding="utf-8")
    return path


def names_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "names"
    folder.mkdir()
    for label, text in NAMES.items():
        (folder / f"{label}_names.csv").write_text(text)
    monkeypatch.setenv("CONVSCOPE_SPANISH_NAMES", str(folder))
    return folder


def _open(spec: str, **options):
    return open_texts(spec, **{"text_column": "text", "label_column": "label", "lowercase": True, **options})


def test_normalise_as_the_seed() -> None:
    assert normalise(" MARIA  DEL Carmen ", lowercase=True) == "maria_del_carmen"
    assert normalise("AB c", lowercase=False) == "AB_c"


def test_merge_keeps_the_heavier_label_and_drops_ties() -> None:
    rows = [
        LabelledText("ana", "f", 1),
        LabelledText("andrea", "m", 10),
        LabelledText("ana", "f", 1),  # a duplicate: merged, its weight added
        LabelledText("andrea", "f", 90),
        LabelledText("alex", "m", 5),
        LabelledText("alex", "f", 5),
    ]
    texts, labels, report = merge_labels(rows)
    assert texts == ["ana", "andrea"] and labels == ["f", "f"]
    assert report == {
        "rows": 6,
        "duplicates": 1,
        "in_several_classes": 2,
        "kept_with_majority_label": 1,
        "dropped_as_ties": 1,
    }


def test_spanish_names_by_frequency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names_folder(tmp_path, monkeypatch)
    data = _open("spanish-names")
    assert data.classes == ["female", "male"]
    # Male file first, as the seed concatenates them; andrea is female by 90 to 10; alex ties and goes.
    assert data.texts == ["jose", "andrea", "juan_carlos", "maria", "ana_belen"]
    assert [data.classes[i] for i in data.labels] == ["male", "female", "male", "female", "female"]
    assert data.report["in_several_classes"] == 2 and data.report["dropped_as_ties"] == 1
    assert data.report["label_weight"] == "INE frequency"


def test_spanish_names_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVSCOPE_SPANISH_NAMES", str(tmp_path))
    with pytest.raises(UserError, match="CONVSCOPE_SPANISH_NAMES"):
        _open("spanish-names")


def test_textcsv_columns_by_name(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,kind,body\n1,spam,WIN NOW\n2,ham,see you\n3,spam,win now\n")
    data = _open(f"textcsv:{path}", text_column="body", label_column="kind")
    assert data.texts == ["win_now", "see_you"] and data.classes == ["ham", "spam"] and data.labels == [1, 0]
    assert data.report["duplicates"] == 1


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("name,label\na,x\n", "no column 'text' (data.text_column); its header has: name, label"),
        ("text,tag\na,x\n", "no column 'label' (data.label_column)"),
        ("", "its header has: nothing"),
        ("text,label\nabc,x\nabd,x\n", "single class ('x')"),
        ("text,label\nabc,x\n   ,y\n", "line 3: empty text"),
        ("text,label\nabc,x\nabd,\n", "line 3: empty label"),
    ],
)
def test_bad_csv(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(UserError, match=re.escape(fragment)):
        _open(f"textcsv:{path}")


def test_skip_bad_skips_empty_rows(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "text,label", [("abc", "x"), ("", "y"), ("abd", "y")])
    data = _open(f"textcsv:{path}", skip_bad=True)
    assert data.texts == ["abc", "abd"] and data.report["skipped_rows"] == ["t.csv:3"]


def test_unknown_specs(tmp_path: Path) -> None:
    for spec in ("names", "textcsv:", f"textcsv:{tmp_path / 'none.csv'}"):
        with pytest.raises(UserError):
            _open(spec)
    (tmp_path / "latin1.csv").write_bytes("text,label\nJos\xe9,m\nAna,f\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        _open(f"textcsv:{tmp_path / 'latin1.csv'}")


def test_vocabulary_encodes_as_the_seed() -> None:
    vocabulary = Vocabulary.of(["maria", "jose", "maria_jose"])
    assert vocabulary.characters == "._aeijmors"
    tokens, dropped = vocabulary.encode(["jose", "joséé", "mariajosemariajose"], max_len=6)
    assert tokens.shape == (3, 7) and tokens.dtype == torch.int64
    assert [vocabulary.decode(t) for t in tokens] == [".jose..", ".jos...", ".mariaj"]
    assert dropped == ["", "éé", ""]


def _data_config(path: Path, **fields) -> DataConfig:
    return DataConfig(name=f"textcsv:{path}", valid_fraction=0.25, **fields)


def _two_class_csv(tmp_path: Path, n: int = 40) -> Path:
    rows = [(f"{'ab' * (i % 5 + 1)}{i}", "even" if i % 2 == 0 else "odd") for i in range(n)]
    return write_csv(tmp_path / "t.csv", "text,label", rows)


def test_split_is_the_seeds_random_split_whatever_the_run_seed(tmp_path: Path) -> None:
    path = _two_class_csv(tmp_path)
    a = prepare_text_data(_data_config(path), seed=0)
    b = prepare_text_data(_data_config(path), seed=7)
    expected = torch.utils.data.random_split(range(40), [0.75, 0.25], generator=torch.Generator().manual_seed(0))
    assert a.valid_index.tolist() == b.valid_index.tolist() == expected[1].indices
    info = a.info
    assert info["sizes"] == {"train": 30, "valid": 10, "test": 10}
    assert info["split"]["test"] == "the validation split"
    assert info["vocabulary"][0] == "." and info["max_len"] == 22
    loaders = a.loaders(Recipe(), torch.device("cpu"))
    assert loaders["test"] is loaders["valid"]
    tokens, labels = next(iter(loaders["valid"]))
    assert torch.equal(tokens, a.tokens[a.valid_index]) and torch.equal(labels, a.labels[a.valid_index])


def test_truncation_is_counted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = prepare_text_data(_data_config(_two_class_csv(tmp_path), max_len=4), seed=0)
    assert data.tokens.shape == (40, 5)
    assert data.info["preprocessing"]["truncated"] == sum(len(t) > 4 for t in data.source.texts) > 0
    assert "longer than max_len 4 truncated" in capsys.readouterr().out


@pytest.mark.parametrize(("field", "value"), [("max_len", 0), ("valid_fraction", 0.0)])
def test_bad_text_fields(tmp_path: Path, field: str, value: float) -> None:
    config = _data_config(_two_class_csv(tmp_path))
    setattr(config, field, value)
    with pytest.raises(UserError, match=f"data.{field}"):
        prepare_text_data(config, seed=0)


def test_loader_randomness_is_a_function_of_seed_epoch_and_batch() -> None:
    tokens, labels = torch.arange(20).reshape(10, 2), torch.arange(10)

    def seen(loader: TextLoader) -> list[int]:
        return [i for _, y in loader for i in y.tolist()]

    loader = TextLoader(tokens, labels, 4, shuffle=True, seed=3)
    first = seen(loader)
    assert sorted(first) == list(range(10)) and len(loader) == 3
    loader.set_epoch(1)
    assert seen(loader) != first
    resumed = TextLoader(tokens, labels, 4, shuffle=True, seed=3)
    resumed.set_epoch(0, start_batch=1)
    assert seen(resumed) == first[4:]
    x, y = next(iter(TextLoader(tokens, labels, 4, shuffle=False)))
    assert torch.equal(x, tokens[:4]) and torch.equal(y, labels[:4])


def test_inputs_are_encoded_with_the_runs_vocabulary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    modality = get_modality("text")
    info = {"vocabulary": ".abc", "max_len": 3, "preprocessing": {"lowercase": True}}
    tokens = modality.load_inputs(Recipe(), info, ["AB", "a!c", "abcabc"], torch.device("cpu"))
    assert tokens.tolist() == [[0, 1, 2, 0], [0, 1, 3, 0], [0, 1, 2, 3]]
    err = capsys.readouterr().err
    assert "'a!c': dropped 1 characters outside the training vocabulary: '!'" in err
    assert "'abcabc' is longer than max_len = 3" in err
    with pytest.raises(UserError, match="is empty"):
        modality.load_inputs(Recipe(), info, ["ab", "  "], torch.device("cpu"))
    with pytest.raises(UserError, match="no character of the training vocabulary"):
        modality.load_inputs(Recipe(), info, ["xyz"], torch.device("cpu"))
    assert modality.model_inputs(Recipe(), info) == {"vocab_size": 4, "max_len": 3}


def test_evaluation_loader_maps_classes_and_refuses_new_ones(tmp_path: Path) -> None:
    modality = get_modality("text")
    info = {"vocabulary": ".abc", "max_len": 3, "preprocessing": {"lowercase": True}, "classes": ["x", "y", "z"]}
    path = write_csv(tmp_path / "e.csv", "text,label", [("ab", "z"), ("ca", "x")])
    tokens, labels = next(iter(modality.evaluation_loader(Recipe(), info, f"textcsv:{path}", torch.device("cpu"))))
    assert labels.tolist() == [2, 0] and tokens.tolist() == [[0, 1, 2, 0], [0, 3, 1, 0]]
    other = write_csv(tmp_path / "o.csv", "text,label", [("ab", "w"), ("ca", "x")])
    with pytest.raises(UserError, match=r"classes \['w'\]"):
        modality.evaluation_loader(Recipe(), info, f"textcsv:{other}", torch.device("cpu"))
