"""Data-parallel training across the GPUs of one worker (torch DistributedDataParallel).

`fit` is what the training steps call. With one process to use (one GPU, or CPU) it runs the
Trainer where it is. With several it spawns one process per GPU (NCCL), each running the same
Trainer loop on its share of every batch, and this process relays rank 0's progress and
per-epoch points to the caller's callbacks, then loads the kept weights into the student.

Why each batch is split across ranks rather than each rank drawing whole batches (torch's
DistributedSampler): `batch_size` keeps its meaning, the optimiser steps and learning-rate
schedule are those of a single-GPU run, and with equal shares the averaged gradient is the
gradient of the whole batch. World size 1 therefore trains exactly as the plain loop does;
more ranks differ only by float summation order and by BatchNorm statistics, which each rank
takes over its own share (no SyncBatchNorm).

The spawn start method re-imports this module in each child, so `_rank_main` and everything
it unpickles live at module level; torch itself is imported inside functions.
"""

from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing
import os
import queue
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compress_engine.errors import EngineError
from compress_engine.report import TorchRoundTrip, TrainingDetails, TrainingPoint
from compress_engine.torch_configs import TrainingConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

    from compress_engine.torch_side.device import TrainDevice
    from compress_engine.torch_side.training import Kind, Split, Trainer

log = logging.getLogger(__name__)

# The worker's policy: auto (every visible GPU), off, or a number of processes.
DDP_ENV = "MODELPRESS_DDP"
# How often the parent looks at its children while relaying their reports.
POLL_S = 0.1


@dataclass(frozen=True)
class WorldPlan:
    """How many processes train, over which torch.distributed backend, and why not more."""

    size: int
    backend: str  # "nccl" (GPUs) or "gloo" (CPU)
    device_type: str  # "cuda" or "cpu"
    note: str | None = None  # why fewer processes than GPUs, for the step's notes

    @property
    def distributed(self) -> bool:
        return self.size > 1


def parse_ddp_setting(value: str | None) -> int | None:
    """MODELPRESS_DDP: None for auto (unset, "" or "auto"), 1 for off ("off", "0", "1"), else
    the number of processes; EngineError for anything else."""
    text = (value or "").strip().lower()
    if text in ("", "auto"):
        return None
    if text in ("off", "0", "1"):
        return 1
    if text.isdigit() and int(text) <= 64:
        return int(text)
    raise EngineError(
        f"{DDP_ENV} is {value!r}: set it to auto (every GPU of the worker), off (one process) "
        "or a number of processes from 2 to 64."
    )


def plan_world(
    device_type: str,
    visible_gpus: int,
    *,
    max_gpus: int | None,
    setting: str | None,
    batch_size: int,
    fixed_batch: int | None,
    daemonic: bool = False,
) -> WorldPlan:
    """The processes a training step uses.

    On CUDA: MODELPRESS_DDP's number, else every visible GPU, at most the recipe's max_gpus.
    On CPU one process, unless MODELPRESS_DDP names a number: gloo processes then, which only
    serves to exercise this path on machines without GPUs. Never more processes than samples
    in a batch, so that every rank has a share of every batch.
    """
    requested = parse_ddp_setting(setting)
    if device_type == "cuda":
        if requested is not None and requested > visible_gpus:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            shown = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
            raise EngineError(
                f"{DDP_ENV}={requested} asks for {requested} GPUs, but this worker sees "
                f"{visible_gpus}{shown}; set it to auto or to at most {visible_gpus}."
            )
        size = requested or visible_gpus
        if max_gpus is not None:
            size = min(size, max_gpus)
        backend = "nccl" if _nccl_available() else "gloo"
    else:
        size, backend = requested or 1, "gloo"
    if fixed_batch is None:
        size = min(size, batch_size)
    size = max(size, 1)
    if size > 1 and daemonic:
        return WorldPlan(
            1,
            backend,
            device_type,
            note=(
                f"Trained in one process instead of {size}: this worker process is daemonic "
                "(e.g. a Celery prefork child) and may not start the processes that "
                "data-parallel training needs."
            ),
        )
    return WorldPlan(size, backend, device_type)


def fit(
    trainer: Trainer,
    round_trip: TorchRoundTrip | None,
    *,
    max_gpus: int | None,
    work_dir: Path,
) -> tuple[TrainingDetails, WorldPlan]:
    """Train `trainer.student` in place, in this process or one process per GPU."""
    plan = plan_world(
        trainer.device.device.type,
        _visible_gpus(trainer.device),
        max_gpus=max_gpus,
        setting=os.environ.get(DDP_ENV),
        batch_size=trainer.cfg.batch_size,
        fixed_batch=trainer.fixed_batch,
        daemonic=multiprocessing.current_process().daemon,
    )
    if not plan.distributed:
        return trainer.run(round_trip), plan  # type: ignore[arg-type]
    return run_distributed(trainer, plan, work_dir, round_trip), plan


# --- one rank's view of the others ----------------------------------------------------------


@dataclass(frozen=True)
class Collective:
    """This rank's place in the process group, and the collectives the Trainer needs."""

    rank: int
    size: int
    backend: str
    device: Any  # torch.device of this rank

    def wrap(self, module: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # static_graph: the rebuilt ONNX graphs run the same ops every step, and parameters
        # a graph leaves unused are then handled without a search in every backward.
        return DistributedDataParallel(module, device_ids=ids, static_graph=True)

    def share(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """This rank's consecutive share of a batch, and the factor on its mean loss that
        makes the ranks' averaged gradient the gradient of the whole batch's mean loss."""
        mine = np.array_split(batch, self.size)[self.rank]
        return mine, len(mine) * self.size / len(batch)

    def rows(self, total: int) -> np.ndarray:
        """This rank's block of `total` rows; the last blocks repeat the last row so that all
        ranks hold blocks of one size, as all_gather needs."""
        block = math.ceil(total / self.size)
        return np.minimum(np.arange(self.rank * block, (self.rank + 1) * block), total - 1)

    def gather_rows(self, mine: torch.Tensor, total: int) -> torch.Tensor:
        """Every rank's block (see rows), in rank order: the `total` rows on every rank."""
        import torch
        import torch.distributed as dist

        parts = [torch.empty_like(mine) for _ in range(self.size)]
        dist.all_gather(parts, mine.contiguous())
        return torch.cat(parts)[:total]

    def mean_over_ranks(self, values: list[float]) -> list[float]:
        """Element-wise mean across ranks, e.g. of each step's (share-weighted) loss."""
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return (t / self.size).tolist()

    def agree(self, values: list[float]) -> list[float]:
        """Rank 0's values on every rank, so that all take the same decisions."""
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return t.tolist()

    def describe(self, device: TrainDevice) -> str:
        return f"{self.size} × {device.description}, DistributedDataParallel over {self.backend}"


# --- the parent: spawn, relay, collect ------------------------------------------------------


@dataclass
class TrainJob:
    """What each rank needs to rebuild the parent's Trainer (callbacks stay in the parent)."""

    student: Any  # nn.Module, on CPU
    teacher: Any  # nn.Module | None
    cfg: TrainingConfig
    kind: Kind
    step_index: int
    fixed_batch: int | None
    teacher_name: str | None
    epochs: int | None
    threads: int  # torch intra-op threads per rank on CPU


def run_distributed(
    trainer: Trainer, plan: WorldPlan, work_dir: Path, round_trip: TorchRoundTrip | None
) -> TrainingDetails:
    """Train on `plan.size` spawned ranks; rank 0's reports reach trainer's callbacks here.

    A rank's EngineError is raised here with its message; anything the callbacks raise (a
    cancellation) ends every rank and propagates unchanged.
    """
    import torch
    import torch.multiprocessing as mp

    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ddp-", dir=work_dir) as tmp:
        folder = Path(tmp)
        _save_split(trainer.split, folder / "split")
        job = TrainJob(
            student=trainer.student.cpu(),
            teacher=None if trainer.teacher is None else trainer.teacher.cpu(),
            cfg=trainer.cfg,
            kind=trainer.kind,
            step_index=trainer.step_index,
            fixed_batch=trainer.fixed_batch,
            teacher_name=trainer.teacher_name,
            epochs=trainer.epochs,
            threads=max(1, torch.get_num_threads() // plan.size),
        )
        # A file, not spawn's pipe: tensors passed as arguments would travel through shared
        # memory, which containers keep small (64 MB by default under docker).
        torch.save(job, folder / "job.pt")
        reports = mp.get_context("spawn").SimpleQueue()
        ranks = mp.start_processes(
            _rank_main,
            args=(str(folder), plan, reports, os.getpid()),
            nprocs=plan.size,
            join=False,
            start_method="spawn",
        )
        relay = _Relay(trainer)
        try:
            while not _joined(ranks, reports, relay):
                relay.drain(reports)
            relay.drain(reports)
        finally:
            for process in ranks.processes:
                if process.is_alive():
                    process.terminate()
                process.join()
        if relay.details is None:
            raise RuntimeError("Data-parallel training ended without rank 0's result.")
        state = torch.load(folder / "student.pt", map_location="cpu", weights_only=True)
    trainer.student.load_state_dict(state)
    trainer.student.cpu().eval()
    return relay.details.model_copy(update={"round_trip": round_trip})


def _joined(ranks: Any, reports: Any, relay: _Relay) -> bool:
    """Whether every rank has finished; a rank's failure becomes an exception here."""
    from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

    try:
        return bool(ranks.join(timeout=POLL_S))
    except (ProcessRaisedException, ProcessExitedException) as exc:
        relay.drain(reports)
        if relay.error is not None:
            raise EngineError(relay.error) from None
        if relay.details is not None and isinstance(exc, ProcessExitedException):
            # Rank 0 reports only after the last collective of training and after saving the
            # student, so a rank dying in gloo's teardown after that (a rare abort) loses
            # nothing.
            log.warning("a data-parallel rank died after training finished: %s", exc)
            return True
        raise RuntimeError(
            f"Data-parallel training failed on rank {exc.error_index}: {exc}"
        ) from exc


class _Relay:
    """Hands rank 0's reports to the Trainer's callbacks, in the order they were made."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.details: TrainingDetails | None = None
        self.error: str | None = None

    def drain(self, reports: Any) -> None:
        while True:
            try:
                if reports.empty():
                    return
                kind, value = reports.get()
            except (EOFError, OSError, queue.Empty):
                return
            if kind == "progress":
                self.trainer.progress(value)
            elif kind == "point":
                if self.trainer.on_point is not None:
                    self.trainer.on_point(value)
            elif kind == "done":
                self.details = value
            elif kind == "error" and self.error is None:
                self.error = value


def _visible_gpus(device: TrainDevice) -> int:
    if device.device.type != "cuda":
        return 0
    import torch

    return torch.cuda.device_count()


def _nccl_available() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_nccl_available()


# --- the data, shared through files ---------------------------------------------------------


def _save_split(split: Split, folder: Path) -> None:
    folder.mkdir()
    for part in ("train", "val"):
        for i, array in enumerate(getattr(split, part)):
            np.save(folder / f"{part}{i}.npy", array)
        labels = getattr(split, f"{part}_labels")
        if labels is not None:
            np.save(folder / f"{part}_labels.npy", labels)


def _load_split(folder: Path) -> Split:
    """Copy-on-write maps: the ranks share the page cache instead of a copy of the data each."""
    from compress_engine.torch_side.training import Split

    def arrays(part: str) -> list[np.ndarray]:
        count = len(list(folder.glob(f"{part}[0-9]*.npy")))
        return [np.load(folder / f"{part}{i}.npy", mmap_mode="c") for i in range(count)]

    def labels(part: str) -> np.ndarray | None:
        path = folder / f"{part}_labels.npy"
        return np.load(path) if path.exists() else None

    return Split(
        train=arrays("train"),
        train_labels=labels("train"),
        val=arrays("val"),
        val_labels=labels("val"),
    )


# --- a rank ---------------------------------------------------------------------------------


def _rank_main(rank: int, folder: str, plan: WorldPlan, reports: Any, parent: int) -> None:
    """One spawned rank: join the group, run the Trainer loop, rank 0 reports and saves."""
    _die_with(parent)
    import torch
    import torch.distributed as dist

    from compress_engine.torch_side.device import cpu_device, cuda_device
    from compress_engine.torch_side.training import Trainer

    path = Path(folder)
    try:
        # Written moments ago by the parent into its private scratch folder: not user input.
        job: TrainJob = torch.load(path / "job.pt", weights_only=False)
        if plan.device_type == "cuda":
            torch.cuda.set_device(rank)
            device = cuda_device(rank)
        else:
            torch.set_num_threads(job.threads)
            device = cpu_device()
        dist.init_process_group(
            plan.backend,
            init_method=f"file://{path / 'rendezvous'}",
            rank=rank,
            world_size=plan.size,
        )
        try:
            lead = rank == 0

            def on_point(point: TrainingPoint) -> None:
                reports.put(("point", point))

            def progress(fraction: float) -> None:
                reports.put(("progress", fraction))

            trainer = Trainer(
                student=job.student,
                teacher=job.teacher,
                split=_load_split(path / "split"),
                cfg=job.cfg,
                kind=job.kind,
                device=device,
                step_index=job.step_index,
                fixed_batch=job.fixed_batch,
                on_point=on_point if lead else None,
                progress=progress if lead else lambda _f: None,
                teacher_name=job.teacher_name,
                epochs=job.epochs,
                dist=Collective(rank, plan.size, plan.backend, device.device),
            )
            details = trainer.run(None)  # type: ignore[arg-type]
            if lead:
                torch.save(trainer.student.state_dict(), path / "student.pt")
                reports.put(("done", details))
            # Tear down together: a rank that leaves while another is still in a gloo
            # exchange makes the other abort ("terminate called without an active exception").
            dist.barrier()
        finally:
            dist.destroy_process_group()
    except EngineError as exc:
        # The parent raises it with this message; torch's spawn hands it every other
        # exception's traceback.
        reports.put(("error", str(exc)))
        raise


def _die_with(parent: int) -> None:
    """End this rank when the process that spawned it dies, e.g. killed at a job's hard time
    limit: the other ranks would otherwise hold their GPUs until a collective timed out."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)
