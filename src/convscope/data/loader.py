"""Batches straight from resident tensors, with randomness fixed by (seed, epoch, batch)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import torch

from convscope.data.augment import HorizontalFlip, Normalize, Pipeline
from convscope.data.base import ImageSet
from convscope.errors import UserError


def _generator(*key: object) -> torch.Generator:
    """A CPU generator seeded by hashing ``key``: unrelated streams for nearby keys, same on every run."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little"))


class IndexLoader:
    """Batches of sample indices with randomness fixed by (seed, epoch, batch); subclasses turn an index
    batch into tensors (:meth:`_batch`).

    The order of epoch ``e`` is a permutation drawn from a generator keyed by (seed, e), and any randomness
    of batch ``b`` from one keyed by (seed, e, b, rank), so ``set_epoch(e, start_batch=k)`` yields exactly the
    batches k, k+1, ... of an uninterrupted epoch e: the checkpoint only needs (epoch, batch). Without
    ``shuffle`` the order is the data order (evaluation).

    With ``world_size > 1`` rank r takes every world_size-th index of the epoch's order, the order
    first padded by wrapping around to a multiple of world_size (as DistributedSampler does), so
    every rank runs the same number of batches. Evaluation passes ``pad=False``: no example counts
    twice, and ranks may run one batch more or less (no collective runs per batch there).
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
    ) -> None:
        if batch_size < 1:
            raise UserError(f"batch_size = {batch_size}: expected an integer >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.size = size
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self._epoch = 0
        self._start_batch = 0

    @property
    def num_samples(self) -> int:
        """Indices this rank serves per epoch: padding included, before ``drop_last`` removes a partial batch."""
        if not self.pad:
            return len(range(self.rank, self.size, self.world_size))
        return math.ceil(self.size / self.world_size)

    def __len__(self) -> int:
        """Batches per epoch for this rank (a resumed epoch still counts from batch 0)."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration epoch ``epoch``, starting at batch ``start_batch`` (to resume)."""
        if epoch < 0 or not 0 <= start_batch <= len(self):
            raise ValueError(f"cannot start epoch {epoch} at batch {start_batch} of {len(self)}")
        self._epoch = epoch
        self._start_batch = start_batch

    def _order(self, epoch: int) -> torch.Tensor:
        """This rank's sample indices for ``epoch``, in the order they are served."""
        n = self.size
        order = torch.randperm(n, generator=_generator("order", self.seed, epoch)) if self.shuffle else torch.arange(n)
        if self.world_size > 1 and not self.pad:
            order = order[self.rank :: self.world_size]
        elif self.world_size > 1 and n > 0:
            total = self.num_samples * self.world_size
            order = order.repeat(math.ceil(total / n))[:total][self.rank :: self.world_size]
        return order

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # Read the state now, not at the first next(): a later set_epoch must not change this pass.
        return self._batches(self._epoch, self._start_batch)

    def _batches(self, epoch: int, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order(epoch)
        for b in range(start_batch, len(self)):
            yield self._batch(order[b * self.batch_size : (b + 1) * self.batch_size], epoch, b)

    def spread(self, count: int) -> tuple[torch.Tensor, ...]:
        """A batch of ``count`` samples evenly spaced over the data, first to last: every class shows even where the
        data is stored sorted by class (a CIFAR-10 valid split), for the pictures drawn after each epoch."""
        return self._batch(torch.linspace(0, self.size - 1, min(count, self.size)).long(), 0, 0)

    def _batch(self, index: torch.Tensor, epoch: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples at ``index`` (CPU int64), batch ``batch`` of epoch ``epoch``, as (inputs, labels)."""
        raise NotImplementedError


class TensorLoader(IndexLoader):
    """Image batches from resident uint8 tensors (no DataLoader, no per-sample work).

    Any ``augment`` is applied to every batch with a generator keyed by (seed, epoch, batch, rank), so
    pass only deterministic steps to an evaluation loader (``build_augment(cfg, train=False)``).
    ``alternate_flip`` is airbench's alternating flip, before ``augment``: a random half of the images (drawn
    once from the seed) is mirrored in the even epochs and the other half in the odd ones, so that over two
    epochs the network sees every image both ways, where independent draws leave a quarter of them one way.
    """

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        augment: Pipeline | None = None,
        mean: list[float],
        std: list[float],
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
        alternate_flip: bool = False,
    ) -> None:
        super().__init__(
            len(data),
            batch_size,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
            pad=pad,
        )
        if len(mean) != data.channels:
            raise UserError(f"mean has {len(mean)} values: expected one per channel ({data.channels})")
        self.data = data
        self.augment = augment
        self.normalize = Normalize(mean, std)
        self.device = torch.device(device)
        self.channels_last = channels_last
        # The same draw on every rank and run: a function of the seed alone.
        self.flipped_in_even_epochs = (
            torch.rand(len(data), generator=_generator("alternate-flip", seed)) < 0.5 if alternate_flip else None
        )

    def _batch(self, index: torch.Tensor, epoch: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = index.to(self.data.images.device)
        # Move uint8, convert on the device: a quarter of the bytes of a float32 transfer.
        x = self.data.images[index].to(self.device).float().div_(255)
        y = self.data.labels[index].to(self.device)
        if self.flipped_in_even_epochs is not None:
            flip = self.flipped_in_even_epochs[index.cpu()] ^ bool(epoch % 2)
            x = HorizontalFlip().apply(x, flip.to(self.device))
        if self.augment is not None:
            x = self.augment(x, _generator("augment", self.seed, epoch, batch, self.rank))
        x = self.normalize(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y
