"""Which Celery queue a job goes to: `gpu` for recipes that train, when a GPU worker is up.

The rule, kept deliberately simple:
- A recipe *trains* when one of its steps trains a model for epochs, by the engine's rule
  (compress_engine.training_steps: the registry's heavy passes as configured, e.g. distill,
  finetune, or channel pruning that recovers between iterations). Those epochs are where a
  GPU pays off, tens of times over.
- Everything else (quantization, one-shot pruning, taylor importance, which backpropagates a
  few batches only) runs on the `cpu` queue: ONNX Runtime's int8 kernels and the latency
  figures most users want are CPU ones, and a CPU worker would otherwise idle behind GPU work.
- A training recipe goes to `gpu` only while a live worker (a fresh heartbeat) consumes the
  gpu queue *and* has a CUDA device; without one it goes to `cpu`, where torch trains on the
  CPU. So a deployment without GPU workers never strands a job on a queue nobody reads.

The decision is made when the job is created (retry and duplicate create a new job, so they
decide again with the workers alive at that time) and stored on Job.queue.
"""

from __future__ import annotations

from django.conf import settings

from compress_engine import training_steps
from compress_engine.configs import Recipe
from jobs.models import WorkerHeartbeat


def cpu_queue() -> str:
    return settings.MODELPRESS_CPU_QUEUE


def gpu_queue() -> str:
    return settings.MODELPRESS_GPU_QUEUE


def gpu_workers() -> list[WorkerHeartbeat]:
    """Live workers that consume the gpu queue and have a CUDA device."""
    queue = gpu_queue()
    alive = WorkerHeartbeat.alive().exclude(cuda_device="").order_by("hostname")
    return [w for w in alive if queue in w.queue_names]


def choose_queue(recipe: Recipe) -> str:
    """The queue for a job with this recipe, by the rule in the module docstring."""
    if training_steps(recipe) and gpu_workers():
        return gpu_queue()
    return cpu_queue()
