"""The training loop of seed 004, grown up: precision, channels_last, checkpoints, exact resume, callbacks.

The task says what a step computes (loss, logged values, validation metrics); the trainer owns
everything around it. Exact resume rests on the loaders' randomness being a pure function of
(seed, epoch, batch): a checkpoint stores only the position (epoch, batch, global step) beside
the model, optimiser, schedule, global RNG states, callback states and history.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from convscope.config import OptimConfig, TrainConfig
from convscope.distributed import barrier, rank_and_world_size
from convscope.engine.callbacks import Callback, EarlyStopping, StopTraining, is_better, monitored
from convscope.engine.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from convscope.engine.divergence import Diverged, DivergenceGuard
from convscope.engine.history import History, Row
from convscope.engine.optim import build_optimizer, build_scheduler, current_lr_momentum, resolve_device
from convscope.engine.progress import Progress
from convscope.engine.seeding import capture_rng, deterministic_algorithms, restore_rng, seed_everything
from convscope.engine.task import Batch, Task
from convscope.engine.tensorboard import TensorBoardLogger
from convscope.errors import UserError
from convscope.models.layers import eval_mode
from convscope.run import remove_stale_temporaries


class Loader(Protocol):
    """A training loader: ``len`` batches per epoch, positioned by ``set_epoch`` before each pass."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Batch]: ...

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None: ...


def _loss_first(names: Iterable[str]) -> list[str]:
    """Metric names with the loss first, as in seed 004's lines and tables; the rest keep their order."""
    return sorted(names, key=lambda name: name != "loss")


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        task: Task,
        optim: OptimConfig,
        train: TrainConfig,
        *,
        run_dir: Path | None = None,
        callbacks: Sequence[Callback] = (),
        param_groups: Iterable[dict[str, Any]] | None = None,
        checkpoint_extra: dict[str, Any] | None = None,
    ) -> None:
        optim.validate()
        train.validate()
        self.optim_config, self.train_config = optim, train
        self.task = task
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.checkpoint_extra = dict(checkpoint_extra or {})
        self.device = resolve_device(train.device)
        if train.precision == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("train.precision = 'bf16' is not supported by this GPU; use 'fp32'")
        self.rank, self.world_size = rank_and_world_size()
        self.is_main = self.rank == 0  # only rank 0 prints and writes files

        memory_format = torch.channels_last if train.channels_last else torch.preserve_format
        self.model = model.to(device=self.device, memory_format=memory_format)
        # Training steps run through the DDP wrapper (it averages gradients across ranks during backward and
        # broadcasts rank 0's initial weights and buffers); checkpoints and evaluation use the bare self.model.
        self.train_model: nn.Module = self.model
        if self.world_size > 1:
            device_ids = [self.device.index or torch.cuda.current_device()] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=device_ids)
        self.optimizer = build_optimizer(optim, param_groups if param_groups is not None else model.parameters())
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None  # needs steps per epoch: built in fit

        early = (
            [EarlyStopping(train.monitor, train.monitor_mode, train.early_stopping, train.patience)]
            if train.early_stopping != "none"
            else []
        )
        # metrics.csv is always written; a trainer without a run directory writes no files, so no event files either.
        loggers = (
            [TensorBoardLogger(self.run_dir)] if "tensorboard" in train.loggers and self.run_dir is not None else []
        )
        self.callbacks: list[Callback] = sorted([*callbacks, *early, *loggers], key=lambda c: c.order)

        self.history = History()
        self.epoch = 0  # epochs finished = index of the epoch in progress
        self.batch = 0  # batches finished in the epoch in progress
        self.global_step = 0
        self.best_value: float | None = None
        self.steps_per_epoch = 0
        self.diverged: dict[str, Any] | None = None  # where the loss diverged and which weights were kept
        self._start_weights: dict[str, torch.Tensor] = {}  # what a phase diverging before its first best falls back to
        # Sums over the epoch in progress: value * samples, samples, seconds (saved for mid-epoch resume).
        self._epoch_totals: dict[str, float] = {}
        self._epoch_samples = 0
        self._epoch_seconds = 0.0

    # ---- public API -------------------------------------------------------------------------

    def fit(
        self, train_loader: Loader, valid_loader: Iterable[Batch] | None = None, *, resume: bool = False
    ) -> History:
        """Train for ``train.epochs`` (from ``last.pt`` with ``resume``), validating after each epoch."""
        cfg = self.train_config
        if valid_loader is not None:  # fail now rather than after the first epoch
            monitored(dict.fromkeys(_loss_first(self.task.make_metrics()), math.nan), cfg.monitor)
        self.steps_per_epoch = len(train_loader)
        if self.steps_per_epoch == 0:
            raise UserError(f"the training data gives no batches (train.batch_size = {cfg.batch_size})")
        self.scheduler = build_scheduler(self.optim_config, self.optimizer, self.steps_per_epoch, cfg.epochs)
        self._guard = DivergenceGuard(cfg.divergence_factor, self.steps_per_epoch)
        self.callbacks = sorted([*self.callbacks, self._guard], key=lambda c: c.order)
        seed_everything(cfg.seed)
        progress = Progress(
            epochs=cfg.epochs,
            steps_per_epoch=self.steps_per_epoch,
            log_every=cfg.log_every,
            quiet=cfg.quiet,
            enabled=self.is_main,
        )
        if self.is_main and self.run_dir is not None:
            self._remove_stale_temporaries(progress)
        if resume:
            stopped = self._restore(progress)
            if stopped:
                return self.history
        else:
            self._refuse_existing_run()
        self._start_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

        with deterministic_algorithms(cfg.deterministic):
            try:
                stop = self._dispatch("on_fit_start")
                while stop is None and self.epoch < cfg.epochs:
                    stop = self._train_epoch(train_loader, progress)
                    if isinstance(stop, Diverged):
                        self._keep_good_weights(stop)
                    elif stop is None:
                        stop = self._end_epoch(valid_loader, progress)
                    else:  # stopped mid-epoch: the position is already a clean batch boundary
                        self._save_checkpoint(stopped=True)
            finally:
                progress.close()
        if isinstance(stop, Diverged):
            progress.note(
                f"warning: training diverged: {stop.reason}. Stopped, and kept {self.diverged['kept']}. "
                f"Train again with a lower learning rate (optim.lr is {self.optim_config.lr:g}: try "
                f"--lr {self.optim_config.lr / 10:g}) or set train.grad_clip"
            )
        elif stop is not None:
            progress.note(f"Stopped early after step {self.global_step}: {stop}")
        self._dispatch("on_fit_end")
        return self.history

    def evaluate(self, loader: Iterable[Batch]) -> dict[str, float]:
        """The task's metrics over ``loader``: eval mode, inference mode, the training precision."""
        metrics = self.task.make_metrics().to(self.device)
        with eval_mode(self.model), torch.inference_mode(), self._autocast():
            for batch in loader:
                self.task.validation_step(self.model, self._to_device(batch), metrics)
            computed = metrics.compute()
        out = {}
        for name in _loss_first(computed):
            value = computed[name]
            if value.numel() != 1:
                raise TypeError(f"metric {name!r} is not a scalar; evaluate() reports scalars only")
            out[name] = float(value)
        return out

    def load_best(self) -> None:
        """Load the weights of ``checkpoints/best.pt`` (``last.pt`` when no epoch was validated)."""
        folder = self._checkpoint_dir()
        for name in ("best.pt", "last.pt"):
            path = folder / name
            if path.is_file():
                load_model_state(self.model, load_checkpoint(path)["model"], path)
                return
        raise UserError(f"no checkpoint in {folder}")

    # ---- the loop ---------------------------------------------------------------------------

    def _train_epoch(self, loader: Loader, progress: Progress) -> StopTraining | None:
        cfg = self.train_config
        loader.set_epoch(self.epoch, start_batch=self.batch)
        progress.start_epoch(self.epoch + 1, self.batch)
        self.model.train()
        self._dispatch("on_train_epoch_start")  # after train(): a callback may put modules back in eval mode
        started = time.perf_counter()
        for batch in loader:
            row = self._train_step(batch)
            stop = self._dispatch("on_train_batch_end", row)
            elapsed = time.perf_counter() - started
            self._epoch_seconds += elapsed
            self.history.train_seconds += elapsed
            shown = {k.removesuffix("_avg"): v for k, v in row.items() if k.endswith("_avg")}
            progress.step(self.epoch + 1, self.batch, self.global_step, shown, row["lr"])
            if stop is not None:
                return stop
            # The end-of-epoch checkpoint follows right after the last batch; no need for two.
            due = cfg.checkpoint_every > 0 and self.global_step % cfg.checkpoint_every == 0
            if due and self.batch < self.steps_per_epoch:
                self._save_checkpoint()
            started = time.perf_counter()
        return None

    def _keep_good_weights(self, diverged: Diverged) -> None:
        """Put back the best checkpoint's weights, or the ones the phase started from, and record them as the
        phase's result (``best.pt``) with the divergence, so that nothing downstream uses the diverged model."""
        best = self._checkpoint_dir() / "best.pt" if self.run_dir is not None else None
        if best is not None and best.is_file() and self._guard.healthy(self.history.best.get("train_loss")):
            load_model_state(self.model, load_checkpoint(best)["model"], best)
            kept = f"the best weights so far (epoch {self.history.best.get('epoch', '?')})"
        else:
            self.model.load_state_dict(self._start_weights)
            kept = "the weights this phase started from"
        self.diverged = {"reason": diverged.reason, "step": diverged.step, "loss": diverged.loss, "kept": kept}
        self._save_checkpoint(best=True, stopped=True)

    def _train_step(self, batch: Batch) -> Row:
        batch = self._to_device(batch)
        with self._autocast():
            loss, logged = self.task.training_step(self.train_model, batch)
        loss.backward()
        if self.train_config.grad_clip:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            nn.utils.clip_grad_norm_(params, self.train_config.grad_clip)
        lr, momentum = current_lr_momentum(self.optimizer)  # what this step uses, before the schedule moves
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        self.global_step += 1
        self.batch += 1

        names = ["loss", *logged]
        # One device sync for all logged values rather than one per value.
        stacked = torch.stack([loss.detach().float(), *(v.detach().float() for v in logged.values())])
        if self.world_size > 1:  # the global batch's values on every rank, so every rank decides alike
            dist.all_reduce(stacked)
            stacked /= self.world_size
        values = stacked.tolist()
        samples = self.task.batch_size(batch)
        row: Row = {"epoch": self.epoch + 1, "step": self.global_step}
        row.update(zip(names, values, strict=True))
        self.history.train.append(row)
        window = self.train_config.window or max(1, int(0.05 * self.steps_per_epoch))
        for name, value in zip(names, values, strict=True):
            row[f"{name}_avg"] = self.history.recent_mean(name, window)
            self._epoch_totals[name] = self._epoch_totals.get(name, 0.0) + value * samples
        self._epoch_samples += samples
        row["lr"], row["momentum"] = lr, momentum
        return row

    def _end_epoch(self, valid_loader: Iterable[Batch] | None, progress: Progress) -> StopTraining | None:
        cfg = self.train_config
        started = time.perf_counter()
        metrics = self.evaluate(valid_loader) if valid_loader is not None else {}
        elapsed = time.perf_counter() - started
        self._epoch_seconds += elapsed
        self.history.train_seconds += elapsed

        train_avg = {k: v / self._epoch_samples for k, v in self._epoch_totals.items()}
        row: Row = {
            "epoch": self.epoch + 1,
            "step": self.global_step,
            **metrics,
            **{f"train_{k}": v for k, v in train_avg.items()},
            "seconds": self._epoch_seconds,
        }
        self.history.valid.append(row)
        # Without a validation split the best epoch is the one with the lowest training loss, so that the kept
        # model is never a later, worse one.
        value, mode = (monitored(metrics, cfg.monitor), cfg.monitor_mode) if metrics else (train_avg["loss"], "min")
        improved = math.isfinite(value) and is_better(value, self.best_value, mode)
        if improved:
            self.best_value = value
            self.history.best = dict(row)

        stop = self._dispatch("on_validation_end", metrics) if metrics else None
        stop = self._dispatch("on_epoch_end", row) or stop
        progress.end_epoch(self.epoch + 1, train_avg, metrics, self._epoch_seconds)
        self.epoch, self.batch = self.epoch + 1, 0
        self._epoch_totals, self._epoch_samples, self._epoch_seconds = {}, 0, 0.0
        self._save_checkpoint(best=improved, stopped=stop is not None)
        return stop

    def _dispatch(self, event: str, *args: Any) -> StopTraining | None:
        """Call ``event`` on every callback, even after one asked to stop; return the first stop."""
        stop = None
        for callback in self.callbacks:
            try:
                getattr(callback, event)(self, *args)
            except StopTraining as e:
                stop = stop or e
        return stop

    def _to_device(self, batch: Batch) -> Batch:
        if isinstance(batch, torch.Tensor):
            batch = batch.to(self.device, non_blocking=True)
            if self.train_config.channels_last and batch.dim() == 4 and batch.is_floating_point():
                batch = batch.contiguous(memory_format=torch.channels_last)
            return batch
        if isinstance(batch, tuple | list):
            return type(batch)(self._to_device(b) for b in batch)
        if isinstance(batch, dict):
            return {k: self._to_device(v) for k, v in batch.items()}
        return batch

    def _autocast(self) -> AbstractContextManager[Any]:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.train_config.precision == "bf16")

    # ---- checkpoints ------------------------------------------------------------------------

    def _checkpoint_dir(self) -> Path:
        if self.run_dir is None:
            raise UserError("this trainer has no run directory, so it keeps no checkpoints")
        return self.run_dir / "checkpoints"

    def _remove_stale_temporaries(self, progress: Progress) -> None:
        """What a killed write (SIGKILL, power loss) left in the run directory: the files it writes stay intact."""
        assert self.run_dir is not None
        removed = [*remove_stale_temporaries(self.run_dir), *remove_stale_temporaries(self._checkpoint_dir())]
        if removed:
            progress.note(f"note: removed {', '.join(str(p) for p in removed)}, left by an interrupted write")

    def _refuse_existing_run(self) -> None:
        if self.run_dir is not None and (self._checkpoint_dir() / "last.pt").is_file():
            raise UserError(
                f"{self.run_dir} already holds a run; pass --resume to continue it or choose another run directory"
            )

    def _callback_keys(self) -> list[tuple[str, Callback]]:
        """Stable names for the callbacks' states: class name, numbered when a class appears twice."""
        seen: dict[str, int] = {}
        keys = []
        for callback in self.callbacks:
            name = type(callback).__name__
            seen[name] = seen.get(name, 0) + 1
            keys.append((name if seen[name] == 1 else f"{name}#{seen[name]}", callback))
        return keys

    def _save_checkpoint(self, *, best: bool = False, stopped: bool = False) -> None:
        """``last.pt`` (and ``best.pt``), then ``metrics.csv`` so the table matches the checkpoint.

        Rank 0 writes; the others wait for it, so none reads a checkpoint still being written (``load_best``).
        """
        if self.is_main and self.run_dir is not None:
            self._write_checkpoint(best=best, stopped=stopped)
        barrier()

    def _write_checkpoint(self, *, best: bool, stopped: bool) -> None:
        assert self.run_dir is not None
        folder = self._checkpoint_dir()
        model_state = self.model.state_dict()
        if best:
            save_checkpoint(
                folder / "best.pt",
                {
                    "model": model_state,
                    "epoch": self.epoch,
                    "global_step": self.global_step,
                    "metrics": self.history.best,
                    "extra": self.checkpoint_extra,
                },
            )
        save_checkpoint(
            folder / "last.pt",
            {
                "model": model_state,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "epoch": self.epoch,
                "batch": self.batch,
                "global_step": self.global_step,
                "epochs": self.train_config.epochs,
                "steps_per_epoch": self.steps_per_epoch,
                "epoch_progress": {
                    "totals": self._epoch_totals,
                    "samples": self._epoch_samples,
                    "seconds": self._epoch_seconds,
                },
                "rng": capture_rng(self.device),
                "callbacks": {key: callback.state_dict() for key, callback in self._callback_keys()},
                "history": self.history.state_dict(),
                "best_value": self.best_value,
                "stopped": stopped,
                "diverged": self.diverged,
                "config": {
                    "optim": dataclasses.asdict(self.optim_config),
                    "train": dataclasses.asdict(self.train_config),
                },
                "extra": self.checkpoint_extra,
            },
        )
        self.history.write_csv(self.run_dir / "metrics.csv")

    def _restore(self, progress: Progress) -> bool:
        """Restore everything from ``last.pt``; True when that run had already stopped early."""
        folder = self._checkpoint_dir()
        path = folder / "last.pt"
        if not path.is_file():
            raise UserError(f"--resume: no checkpoint in {folder}")
        state = load_checkpoint(path)
        self._check_resumable(state, path)
        load_model_state(self.model, state["model"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"], self.device)
        for key, callback in self._callback_keys():
            if key in state["callbacks"]:
                callback.load_state_dict(state["callbacks"][key])
        self.history = History.from_state(state["history"])
        self.epoch, self.batch, self.global_step = state["epoch"], state["batch"], state["global_step"]
        self.best_value = state["best_value"]
        self.diverged = state.get("diverged")
        progress_state = state["epoch_progress"]
        self._epoch_totals = dict(progress_state["totals"])
        self._epoch_samples, self._epoch_seconds = progress_state["samples"], progress_state["seconds"]
        # A kill between last.pt and metrics.csv leaves the table behind; bring it level.
        if self.is_main and self.run_dir is not None:
            self.history.write_csv(self.run_dir / "metrics.csv")
        if state["stopped"]:
            progress.note(f"{path} is from a run that stopped early at step {self.global_step}; nothing to resume")
        elif self.epoch >= self.train_config.epochs:
            progress.note(f"{path} is from a run that finished its {self.epoch} epochs; nothing to resume")
        else:
            progress.note(f"Resuming {path} at epoch {self.epoch + 1}, batch {self.batch} (step {self.global_step})")
        return bool(state["stopped"])

    def _check_resumable(self, state: dict[str, Any], path: Path) -> None:
        """The optimiser and schedule must be the ones the checkpoint was written with, or resume is not exact."""
        saved = state["config"]["optim"]
        now = dataclasses.asdict(self.optim_config)
        changed = [f"optim.{k} {saved.get(k)!r} -> {v!r}" for k, v in now.items() if saved.get(k) != v]
        if changed:
            raise UserError(f"--resume: {path} was trained with other settings ({', '.join(changed)}); keep them")
        if state["steps_per_epoch"] != self.steps_per_epoch:
            raise UserError(
                f"--resume: {path} has {state['steps_per_epoch']} steps per epoch, the data now gives "
                f"{self.steps_per_epoch}; resume with the same data and train.batch_size"
            )
        if state["epochs"] != self.train_config.epochs and self.scheduler is not None:
            raise UserError(
                f"--resume: {path} was written for train.epochs = {state['epochs']} and the lr schedule "
                f"depends on it; keep train.epochs = {state['epochs']} (only optim.scheduler = 'none' can extend a run)"
            )
