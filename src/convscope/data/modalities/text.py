"""Texts: from a recipe's ``[data]`` section to token tensors and their loaders (seed 004's character CNN input).

A text becomes ``max_len + 1`` token indices: the boundary token ``.``, its first ``max_len`` characters,
then ``.`` padding. The vocabulary is the training data's characters; it is recorded in the run so that
prediction encodes with it, and characters outside it are dropped and counted.

The split is seed 004's: ``random_split`` into (1 - valid_fraction, valid_fraction) with a generator seeded 0
whatever the run's seed, because the validation part is also the test split (the seed has no third one), and
every run of a recipe must be measured on the same texts.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import random_split

from convscope.data.loader import IndexLoader
from convscope.data.sources.text import TextSet, normalise, open_texts
from convscope.distributed import rank_and_world_size
from convscope.errors import UserError

if TYPE_CHECKING:
    from convscope.config import DataConfig, Recipe

# Seed 004's start and padding token. A "." inside a text reads as the same token (no name holds one).
BOUNDARY = "."
SPLIT_SEED = 0


@dataclass(frozen=True)
class Vocabulary:
    """``characters[i]`` is token ``i``; token 0 is the boundary token."""

    characters: str

    @classmethod
    def of(cls, texts: Sequence[str]) -> Vocabulary:
        return cls(BOUNDARY + "".join(sorted(set("".join(texts)) - {BOUNDARY})))

    def __len__(self) -> int:
        return len(self.characters)

    def encode(self, texts: Sequence[str], max_len: int) -> tuple[torch.Tensor, list[str]]:
        """N x (max_len + 1) token indices, and each text's characters outside the vocabulary (dropped)."""
        index = {c: i for i, c in enumerate(self.characters)}
        rows, dropped = [], []
        for text in texts:
            known = [index[c] for c in text if c in index][:max_len]
            rows.append([0, *known] + [0] * (max_len - len(known)))
            dropped.append("".join(c for c in text if c not in index))
        return torch.tensor(rows, dtype=torch.int64).reshape(len(texts), max_len + 1), dropped

    def decode(self, tokens: torch.Tensor) -> str:
        return "".join(self.characters[i] for i in tokens.tolist())


class TextLoader(IndexLoader):
    """Batches of (tokens N x L int64, labels N int64) from tensors kept on the training device."""

    def __init__(
        self,
        tokens: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        # Training shards are padded to equal length (DDP steps together); evaluation shards are not.
        super().__init__(len(labels), batch_size, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size,
                         pad=shuffle)  # fmt: skip
        self.tokens = tokens.to(device)
        self.labels = labels.to(device)

    def _batch(self, index: torch.Tensor, epoch: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = index.to(self.tokens.device)
        return self.tokens[index], self.labels[index]


@dataclass
class TextData:
    source: TextSet
    vocabulary: Vocabulary
    max_len: int
    lowercase: bool
    valid_fraction: float
    tokens: torch.Tensor  # every text, N x (max_len + 1)
    labels: torch.Tensor
    train_index: torch.Tensor
    valid_index: torch.Tensor

    @property
    def info(self) -> dict[str, Any]:
        """What a run records: enough to encode new texts exactly as the training texts were."""
        return {
            "dataset": self.source.name,
            "classes": self.source.classes,
            "sizes": {"train": len(self.train_index), "valid": len(self.valid_index), "test": len(self.valid_index)},
            "vocabulary": self.vocabulary.characters,
            "max_len": self.max_len,
            "preprocessing": {
                "lowercase": self.lowercase,
                "whitespace": "runs become '_'",
                "boundary_token": BOUNDARY,
                "layout": f"'{BOUNDARY}' + the first max_len characters + '{BOUNDARY}' padding",
                "truncated": sum(len(text) > self.max_len for text in self.source.texts),
            },
            "texts": self.source.report,
            "split": {"valid_fraction": self.valid_fraction, "seed": SPLIT_SEED, "test": "the validation split"},
        }

    def loaders(self, recipe: Recipe, device: torch.device) -> dict[str, TextLoader]:
        rank, world_size = rank_and_world_size()
        train = TextLoader(
            self.tokens[self.train_index],
            self.labels[self.train_index],
            recipe.train.batch_size,
            shuffle=True,
            seed=recipe.train.seed,
            device=device,
            rank=rank,
            world_size=world_size,
        )
        valid = TextLoader(
            self.tokens[self.valid_index],
            self.labels[self.valid_index],
            recipe.data.eval_batch_size,
            shuffle=False,
            device=device,
            rank=rank,
            world_size=world_size,
        )
        return {"train": train, "valid": valid, "test": valid}


def prepare_text_data(data: DataConfig, *, seed: int, skip_bad: bool = False) -> TextData:
    """Read, merge and encode the texts ``data.name`` names, and split them as seed 004 does."""
    if data.max_len < 1:
        raise UserError(f"data.max_len = {data.max_len}: expected an integer >= 1")
    if not 0.0 < data.valid_fraction < 1.0:
        raise UserError(
            f"data.valid_fraction = {data.valid_fraction}: expected a number in (0, 1); for texts the validation "
            "split is also the test split"
        )
    source = open_texts(
        data.name,
        text_column=data.text_column,
        label_column=data.label_column,
        lowercase=data.lowercase,
        skip_bad=skip_bad or data.skip_bad,
    )
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    train_part, valid_part = random_split(range(len(source.texts)), [1 - data.valid_fraction, data.valid_fraction],
                                          generator=generator)  # fmt: skip
    train_index, valid_index = torch.tensor(train_part.indices), torch.tensor(valid_part.indices)
    if len(train_index) == 0 or len(valid_index) == 0:
        raise UserError(
            f"data set {data.name!r} has {len(source.texts)} texts: too few for a training and a validation split "
            f"with data.valid_fraction = {data.valid_fraction}"
        )
    if 0 < data.subset < len(train_index):
        pick = torch.randperm(len(train_index), generator=torch.Generator().manual_seed(seed))[: data.subset]
        train_index = train_index[pick]
    # Built from every text, so a validation text never meets a character the model has no embedding for.
    vocabulary = Vocabulary.of(source.texts)
    tokens, _ = vocabulary.encode(source.texts, data.max_len)
    prepared = TextData(source, vocabulary, data.max_len, data.lowercase, data.valid_fraction, tokens,
                        torch.tensor(source.labels, dtype=torch.int64), train_index, valid_index)  # fmt: skip
    _report(prepared.info)
    return prepared


def _report(info: dict[str, Any]) -> None:
    texts = info["texts"]
    line = f"texts: {texts['rows']} rows read, {texts['duplicates']} duplicates merged"
    if texts["in_several_classes"]:
        line += (
            f"; {texts['in_several_classes']} under several classes: {texts['kept_with_majority_label']} keep the "
            f"class of larger {texts['label_weight']}, {texts['dropped_as_ties']} ties dropped"
        )
    if info["preprocessing"]["truncated"]:
        line += f"; {info['preprocessing']['truncated']} longer than max_len {info['max_len']} truncated"
    print(line, flush=True)
    if texts["skipped_rows"]:
        shown = ", ".join(texts["skipped_rows"][:5]) + (", ..." if len(texts["skipped_rows"]) > 5 else "")
        print(f"skipped {len(texts['skipped_rows'])} rows without a text or label: {shown}", flush=True)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


class TextModality:
    def prepare(self, recipe: Recipe, *, skip_bad: bool = False) -> TextData:
        return prepare_text_data(recipe.data, seed=recipe.train.seed, skip_bad=skip_bad)

    def evaluation_loader(self, recipe: Recipe, info: dict[str, Any], spec: str, device: torch.device) -> TextLoader:
        """All texts of ``spec``, encoded with the run's vocabulary; their classes must be among the run's."""
        source = open_texts(
            spec,
            text_column=recipe.data.text_column,
            label_column=recipe.data.label_column,
            lowercase=info["preprocessing"]["lowercase"],
            skip_bad=recipe.data.skip_bad,
        )
        unknown = sorted(set(source.classes) - set(info["classes"]))
        if unknown:
            raise UserError(f"data {spec!r} has classes {unknown} that the run was not trained on ({info['classes']})")
        run_index = {name: i for i, name in enumerate(info["classes"])}
        labels = torch.tensor([run_index[source.classes[label]] for label in source.labels], dtype=torch.int64)
        tokens, dropped = Vocabulary(info["vocabulary"]).encode(source.texts, info["max_len"])
        count = sum(map(len, dropped))
        if count:
            _warn(f"{count} characters of {spec!r} outside the training vocabulary were dropped")
        return TextLoader(tokens, labels, recipe.data.eval_batch_size, shuffle=False, device=device)

    def model_inputs(self, recipe: Recipe, info: dict[str, Any]) -> dict[str, Any]:
        return {"vocab_size": len(info["vocabulary"]), "max_len": info["max_len"]}

    def load_inputs(
        self, recipe: Recipe, info: dict[str, Any], inputs: Sequence[str], device: torch.device
    ) -> torch.Tensor:
        """Texts from the command line -> the training preprocessing and vocabulary, as one batch of tokens."""
        vocabulary, max_len = Vocabulary(info["vocabulary"]), info["max_len"]
        texts = [normalise(raw, lowercase=info["preprocessing"]["lowercase"]) for raw in inputs]
        tokens, dropped = vocabulary.encode(texts, max_len)
        for raw, text, lost in zip(inputs, texts, dropped, strict=True):
            if not text:
                raise UserError(f"input text {raw!r} is empty")
            if len(lost) == len(text):
                raise UserError(
                    f"input text {raw!r} has no character of the training vocabulary {vocabulary.characters!r}"
                )
            if lost:
                _warn(f"input text {raw!r}: dropped {len(lost)} characters outside the training vocabulary: {lost!r}")
            if len(text) - len(lost) > max_len:
                _warn(f"input text {raw!r} is longer than max_len = {max_len}; only its first {max_len} are read")
        return tokens.to(device)
