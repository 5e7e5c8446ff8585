"""Where a run's tensors live and in what precision its language models compute: the top-level settings `device`
(cpu | cuda | cuda:N | auto) and `precision` (fp32 | bf16), checked into a `Placement` before any work starts.

Networks are initialised on the CPU and then moved, so a seed gives the same initial parameters on every device.
bf16 is autocast (torch.autocast) around the language models' forward passes: the parameters, their gradients
and the optimiser's state stay float32 (the "fp32 master weights" of mixed precision), and no loss scaling is
needed, since bfloat16 has float32's exponent range.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from core.checks import require
from core.errors import ConfigError

DEVICES = "cpu, cuda, cuda:N (a GPU's index) or auto (cuda when a GPU is present, else cpu)"
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Placement:
    device: torch.device
    precision: str = "fp32"

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context for a language model's forward pass: bf16 autocast, or nothing in fp32."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


CPU = Placement(torch.device("cpu"))


def resolve_device(name: str, local_rank: int = 0, local_ranks: int = 1) -> torch.device:
    """The device `name` stands for. Under torchrun, `cuda` is GPU `local_rank` of this machine, one per rank of
    the `local_ranks` there; every rank checks the same things, so all of them refuse a bad setting."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r} is not a device; valid: {DEVICES}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    require(device.type == "cuda", f"device={name!r} is not supported; valid: {DEVICES}")
    require(
        torch.cuda.is_available(),
        f"device={name}, but torch finds no CUDA GPU here (torch {torch.__version__}, "
        f"{'built for CUDA ' + str(torch.version.cuda) if torch.version.cuda else 'a CPU-only build'}); on a "
        f"machine with an NVIDIA GPU install a CUDA build of torch (see the README), or set device=cpu or device=auto",
    )
    count = torch.cuda.device_count()
    if device.index is None:
        require(
            local_ranks <= count,
            f"device={name} gives each of this machine's {local_ranks} ranks a GPU of its own, but it has {count}; "
            f"start at most {count} ranks per machine (torchrun --nproc_per_node={count})",
        )
        return torch.device("cuda", local_rank)
    require(
        local_ranks == 1,
        f"device={name} names one GPU, and {local_ranks} ranks of this job run on this machine; set device=cuda, "
        f"and each rank takes GPU LOCAL_RANK",
    )
    require(
        device.index < count,
        f"device={name} asks for GPU {device.index}, but this machine has {count} GPU{'s' * (count != 1)}; "
        f"choose one of cuda:0 .. cuda:{count - 1}",
    )
    return device


def placement(device: str, precision: str, local_rank: int = 0, local_ranks: int = 1) -> Placement:
    """`device` and `precision` checked together: bf16 is for a GPU; fp32 runs everywhere."""
    require(precision in PRECISIONS, f"precision={precision!r}; valid: {', '.join(PRECISIONS)}")
    resolved = resolve_device(device, local_rank, local_ranks)
    require(
        precision == "fp32" or resolved.type == "cuda",
        f"precision={precision} is for a GPU (autocast on CUDA); this run is on {resolved}: set precision=fp32, "
        f"or device=cuda on a machine with one",
    )
    return Placement(resolved, precision)
