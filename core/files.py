"""Safe file I/O for run folders: atomic writes and checkpoints loaded without running code from the file."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import IO

import torch

from core.errors import CheckpointError


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write to a temporary file, flush it to disk, then rename over `path`: a crash or power cut mid-write
    leaves the previous file whole."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    """Load with torch's weights-only unpickler: tensors and plain data only, never code from the file. Tensors land
    on the CPU, whatever device saved them (a run places them as it loads them)."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refused to load {path}: it holds objects other than tensors and plain data, "
            f"which could run code ({str(err).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({str(err).splitlines()[0]}); it may be "
            f"truncated or corrupt: delete it to start the run afresh"
        ) from None
