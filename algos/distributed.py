"""Data-parallel training across processes, as `torchrun --nproc_per_node=N -m algos ...` starts them (torch's
own launcher and process group: gloo for CPU tensors, NCCL for CUDA ones).

A job's settings describe the whole job: `env.num_envs` environments and `total_timesteps` steps in all, split
evenly over the ranks. Rank r plays environments r * n .. (r + 1) * n - 1 of the job (their seeds are those a
single process with all of them would give), every rank starts from the same parameters, and each gradient step
uses the gradient averaged over the ranks: one all-reduce of the flattened gradients after the backward pass,
before clipping (the scheme of CleanRL's ppo_atari_multigpu.py). That averaging is explicit rather than
DistributedDataParallel's wrapper because an update here calls several agent methods per step (evaluate, value,
a pre-training loss) where DDP hooks one `forward`, and TRPO's conjugate gradient takes gradients with
torch.autograd.grad, which DDP's hooks never see. Statistics that decide an update are reduced too, so that a job
on N ranks computes what one process computes on the ranks' batches joined: advantage normalisation, the running
observation and reward statistics, the KL controller's batch KL, TRPO's surrogate, KL and Fisher-vector products.

Without torchrun (or with one rank) every function here is the identity, and a run is exactly a plain run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

from core.errors import NonFiniteError


def start_from_environment() -> None:
    """Join the process group when torchrun started this process (it sets RANK, WORLD_SIZE, MASTER_ADDR ...), or
    when this is one of several tasks of a submitit job (hydra/launcher=slurm with tasks_per_node > 1), whose
    SLURM variables submitit's TorchDistributedEnvironment turns into torchrun's. Each task sees every GPU of its
    node and takes GPU LOCAL_RANK."""
    if dist.is_initialized():
        return
    if "WORLD_SIZE" not in os.environ and _submitit_tasks() > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    if "WORLD_SIZE" in os.environ:
        dist.init_process_group()  # gloo for CPU tensors, plus NCCL for CUDA tensors where torch has it


def _submitit_tasks() -> int:
    if os.environ.get("SUBMITIT_EXECUTOR") not in ("slurm", "local"):
        return 1
    from submitit import JobEnvironment

    return JobEnvironment().num_tasks


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def local_rank() -> int:
    """This process's index among the ranks of its machine (its GPU, with device=cuda)."""
    return int(os.environ.get("LOCAL_RANK", 0)) if dist.is_initialized() else 0


def local_world_size() -> int:
    """The ranks on this process's machine."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 logs, writes the run folder and evaluates."""
    return rank() == 0


def backend() -> str | None:
    """The process group's backends by device, e.g. "cpu:gloo, cuda:nccl" (None without torchrun)."""
    return dist.get_backend_config() if dist.is_initialized() else None


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Every parameter's .grad replaced by its mean over the ranks, in one all-reduce of the flattened gradients.
    A parameter the loss did not reach has no gradient on any rank (the ranks run the same graph) and keeps none,
    so the optimiser skips it as one process would."""
    if world_size() == 1:
        return
    params = [p for p in params if p.grad is not None]
    flat = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None])
    dist.all_reduce(flat)
    flat /= world_size()
    for p, chunk in zip(params, flat.split([p.numel() for p in params])):
        if p.grad is not None:
            p.grad.copy_(chunk.view_as(p.grad))


def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    if world_size() == 1:
        return x
    total = x.detach().clone()
    dist.all_reduce(total)
    return total


def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The mean over the ranks of a value each rank computed over an equal share of the samples."""
    return x if world_size() == 1 else sum_over_ranks(x) / world_size()


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(mean, population variance, count) over the first axis of `x` on every rank together (two passes: the
    global mean first, then the squared deviations from it)."""
    if world_size() == 1:
        return x.mean(0), x.var(0, unbiased=False), x.shape[0]
    count = int(sum_over_ranks(torch.tensor(x.shape[0], device=x.device)).item())
    mean = sum_over_ranks(x.sum(0)) / count
    var = sum_over_ranks(((x - mean) ** 2).sum(0)) / count
    return mean, var, count


def mean(x: torch.Tensor) -> torch.Tensor:
    """x.mean() over every rank's `x` together."""
    return x.mean() if world_size() == 1 else moments(x.reshape(-1))[0]


def sample_std(x: torch.Tensor) -> torch.Tensor:
    """x.std() (n - 1 in the denominator) over every rank's `x` together."""
    if world_size() == 1:
        return x.std()
    _, var, n = moments(x.reshape(-1))
    return torch.sqrt(var * n / (n - 1))


def agree_to_stop(checkpoint_due: bool, signal_number: int) -> tuple[bool, int]:
    """Every rank takes the same decision at the end of an update: checkpoint when rank 0's clock says so or any
    rank was signalled; stop with the highest signal number any rank received (0: none)."""
    if world_size() == 1:
        return checkpoint_due, signal_number
    flags = torch.tensor([int(checkpoint_due and is_main()), signal_number])
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return bool(flags[0]) or bool(flags[1]), int(flags[1])


def agree_on_failure(failed: bool) -> bool:
    """True on every rank when any rank failed."""
    if world_size() == 1:
        return failed
    flag = torch.tensor([int(failed)])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag)


@contextmanager
def stop_together(message_on_others: str) -> Iterator[None]:
    """A NonFiniteError raised in the block on any rank is raised on every rank (`message_on_others` on the ranks
    where the block itself passed), so that no rank waits in a collective for a rank that has gone."""
    try:
        yield
    except NonFiniteError:
        agree_on_failure(True)
        raise
    if agree_on_failure(False):
        raise NonFiniteError(message_on_others)


def gather_to_main(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on rank 0 (an empty list elsewhere). Tensors travel on the CPU, so that
    rank 0 opens no context on the other ranks' GPUs."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size() if is_main() else []
    dist.gather_object(_on_cpu(obj), gathered if is_main() else None, dst=0)
    return gathered


def _on_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_on_cpu(v) for v in obj)
    return obj


def from_main(obj: Any) -> Any:
    """Rank 0's `obj`, on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
