"""Data-parallel training on PyTorch's own engine: process groups, ranks, and ``convscope train --nproc N``.

``torchrun --nproc-per-node N -m convscope train ...`` starts N workers with ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` set; :func:`process_group` turns that environment into a process group (gloo on CPU, nccl on
GPUs) with a timeout, so a collective waiting for a dead rank fails instead of hanging. ``--nproc N`` runs
the same through torch's elastic launcher (:func:`launch`), which stops the other workers when one dies.

``train.batch_size`` is per process, as with DistributedDataParallel: the global batch is N times larger.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from convscope.errors import UserError

BACKENDS = ("auto", "gloo", "nccl", "mpi")
# A collective that waits longer than this for another rank fails (seconds).
TIMEOUT_ENV = "CONVSCOPE_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300
T = TypeVar("T")
# Set by the launcher: workers write their user error here instead of printing it, so the launcher prints one.
ERROR_DIR_ENV = "CONVSCOPE_ERROR_DIR"


def rank_and_world_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched_world_size() -> int:
    """The WORLD_SIZE torchrun gave this process (1 outside torchrun)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable WORLD_SIZE = {value!r}: expected an integer") from None


def choose_backend(name: str, device: torch.device) -> str:
    """``auto``: nccl for GPUs, gloo for the CPU; any other name must be available for ``device``."""
    if name not in BACKENDS:
        raise UserError(f"--backend {name!r} is not one of: {', '.join(BACKENDS)}")
    if name == "auto":
        name = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_available() or not dist.is_backend_available(name):
        raise UserError(f"--backend {name}: this PyTorch build has no {name} backend; use gloo (CPU) or nccl (GPU)")
    if name == "nccl" and device.type != "cuda":
        raise UserError(f"--backend nccl needs CUDA GPUs, but training runs on {device.type}; use --backend gloo")
    return name


def timeout() -> timedelta:
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise UserError(f"environment variable {TIMEOUT_ENV} = {raw!r}: expected a number of seconds > 0")
    return timedelta(seconds=seconds)


@contextmanager
def process_group(backend: str, device: torch.device) -> Iterator[None]:
    """Inside: the process group torchrun's environment describes (nothing outside torchrun or when one exists)."""
    if launched_world_size() <= 1 or dist.is_initialized():
        yield
        return
    name = choose_backend(backend, device)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(name, timeout=timeout())
    try:
        yield
    finally:
        dist.destroy_process_group()


def same_on_all_ranks(value: T) -> T:
    """Rank 0's ``value`` on every rank (``value`` itself in one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def report_error(message: str) -> bool:
    """In a worker started by :func:`launch`, hand a user error's ``message`` to the launcher; False outside one."""
    folder = os.environ.get(ERROR_DIR_ENV)
    if not folder:
        return False
    Path(folder, f"rank-{os.environ.get('RANK', '0')}.txt").write_text(message)
    return True


def report_crash(error: BaseException) -> bool:
    """In a worker started by :func:`launch`, hand an unexpected exception (time, summary, traceback) to the
    launcher instead of printing it: when one rank dies, the others fail in their next collective, and only
    the first failure is the cause. False outside a launched worker."""
    folder = os.environ.get(ERROR_DIR_ENV)
    if not folder:
        return False
    summary = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    trace = "".join(traceback.format_exception(error))
    record = {"time": time.time(), "summary": summary, "traceback": trace}
    Path(folder, f"rank-{os.environ.get('RANK', '0')}.crash").write_text(json.dumps(record))
    return True


def _failure_message(errors: Path, failures: dict[int, Any], nproc: int, run_dir: Path | None) -> str:
    """One line for the launcher to print: a killed rank first (the others then lose contact), then the
    earliest crash (its traceback goes to stderr before), then a user error, then the bare exit status."""
    resume = f"; the last checkpoint stays valid: continue with --resume --out {run_dir}" if run_dir else ""
    # The launcher ends the survivors with SIGTERM, and they may be listed too: another signal is the cause.
    killed = sorted(
        (failure.exitcode == -signal.SIGTERM, rank) for rank, failure in failures.items() if failure.exitcode < 0
    )
    killed = [rank for _, rank in killed]
    if killed:
        name = signal.Signals(-failures[killed[0]].exitcode).name
        return f"rank {killed[0]} of {nproc} was killed by {name}; the other ranks were stopped{resume}"
    crashes = sorted((json.loads(p.read_text()), p) for p in errors.glob("rank-*.crash"))
    if crashes:
        first, path = crashes[0]
        print(first["traceback"], file=sys.stderr, end="")
        rank = path.stem.removeprefix("rank-")
        return f"rank {rank} of {nproc} crashed ({first['summary']}); the other ranks were stopped{resume}"
    reported = sorted(errors.glob("rank-*.txt"))
    if reported:
        return reported[0].read_text()
    rank = min(failures)
    return f"rank {rank} of {nproc} failed with exit code {failures[rank].exitcode}; the other ranks were stopped"


def cpu_cores() -> int:
    """The machine's cores (not this process's affinity, which a benchmark's pinning may narrow for a while)."""
    return os.cpu_count() or 1


def check_nproc(nproc: int, device: torch.device) -> None:
    if nproc < 1:
        raise UserError(f"--nproc {nproc}: expected at least 1 process")
    if device.type == "cuda":
        available, what = torch.cuda.device_count(), "GPUs"
    else:
        available, what = cpu_cores(), "CPU cores"
    if nproc > available:
        raise UserError(f"--nproc {nproc}: this machine has {available} {what}; use at most {available}")


def launch(nproc: int, argv: Sequence[str], *, run_dir: Path | None = None, module: str = "convscope") -> None:
    """Run ``python -m MODULE ARGV`` in ``nproc`` processes on this machine (torch's elastic launcher,
    standalone rendezvous). When one fails, the launcher stops the others; that is one UserError here."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    cores = cpu_cores()
    # The launcher's own log lines (rendezvous, the failure table) would bury the one error line.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="convscope-ranks-") as errors:
        environment = {ERROR_DIR_ENV: errors, "OMP_NUM_THREADS": str(max(1, cores // nproc))}
        previous = {key: os.environ.get(key) for key in environment}
        os.environ.update(environment)
        try:
            run(parse_args(["--standalone", "--nproc-per-node", str(nproc), "-m", module, *argv]))
        except ChildFailedError as failed:
            raise UserError(_failure_message(Path(errors), failed.failures, nproc, run_dir)) from None
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            sys.stdout.flush()
