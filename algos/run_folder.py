"""One run = one folder (DESIGN.md sec. 7): the resolved config, TensorBoard events, a checkpoint written
atomically every `checkpoint_interval_s` and when a stop signal arrives, and summary.json with the run's
provenance at the end. The RL loop (algos/run.py) and SeqGAN (algos/seqgan_run.py) each say what goes into the
checkpoint."""

from __future__ import annotations

import json
import platform
import signal
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter

from algos import distributed
from algos.settings import Config
from core.agent import AgentContract
from core.errors import CheckpointError, NonFiniteError, Preempted
from core.files import atomic_write, load_checkpoint


class StopSignal:
    """SIGTERM (a scheduler pre-empting the job) or SIGINT: the CLI installs `handler`; the run checkpoints
    at the end of the current update and stops."""

    received: str | None = None

    @classmethod
    def handler(cls, signum, frame) -> None:
        cls.received = signal.Signals(signum).name

    @classmethod
    def number(cls) -> int:
        return signal.Signals[cls.received].value if cls.received else 0


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("torch", "gymnasium", "ale-py", "transformers", "hydra-core", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def check_checkpoint_meta(checkpoint: dict, path: Path, algo: str, env_id: str) -> None:
    meta = checkpoint.get("meta", {})
    if (meta.get("algo"), meta.get("env")) != (algo, env_id):
        raise CheckpointError(
            f"{path} is a checkpoint of {meta.get('algo')} on {meta.get('env')}, but this run "
            f"is {algo} on {env_id}; resume it with the same algo and env, or use another folder"
        )


def check_checkpoint_fits(checkpoint: dict, path: Path, algo: str, env_id: str, agent: AgentContract) -> None:
    check_checkpoint_meta(checkpoint, path, algo, env_id)
    ours = {k: tuple(v.shape) for k, v in agent.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in checkpoint["agent"].items()}
    if ours != theirs:
        diffs = [
            f"{k}: checkpoint {theirs.get(k)}, this agent {ours.get(k)}"
            for k in sorted(ours.keys() | theirs.keys())
            if ours.get(k) != theirs.get(k)
        ]
        raise CheckpointError(
            f"{path} was saved by a network of another shape ({'; '.join(diffs[:3])}); "
            f"use the run's own net settings (its config.yaml)"
        )


class RunFolder:
    def __init__(self, config: Config, algo: str, run_dir: Path):
        self.config, self.algo, self.dir = config, algo, run_dir
        self.checkpoint_path = run_dir / "checkpoint.pt"
        self.wall_before = 0.0
        self.writes = distributed.is_main()  # of a data-parallel job, rank 0 alone writes the folder

    def open(self, purge_step: int | None) -> None:
        """Write config.yaml and open the TensorBoard writer. When resuming, purge_step hides the events a killed
        process wrote after its last checkpoint (steps >= the first step this process logs), so curves continue
        with no duplicated steps. Other ranks of a data-parallel job only start their clocks."""
        self.start_time = self.last_checkpoint_time = time.perf_counter()
        if not self.writes:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        yaml = OmegaConf.to_yaml(self.config.raw, resolve=True).encode()
        atomic_write(self.dir / "config.yaml", lambda f: f.write(yaml))
        self.writer = SummaryWriter(str(self.dir), purge_step=purge_step)

    def load(self, path: Path) -> dict:
        checkpoint = load_checkpoint(path)
        check_checkpoint_meta(checkpoint, path, self.algo, self.config.env.id)
        return checkpoint

    def wall_clock(self) -> float:
        """Training time over every session of this run."""
        return self.wall_before + time.perf_counter() - self.start_time

    def checkpoint_due(self) -> bool:
        return (
            bool(StopSignal.received)
            or time.perf_counter() - self.last_checkpoint_time >= self.config.run.checkpoint_interval_s
        )

    def write_checkpoint(self, meta: dict, state: dict) -> None:
        """The checkpoint: `state`, and `meta` beside the algo, env and wall-clock that `load` checks."""
        self.writer.flush()  # events up to this checkpoint are on disk before it is
        state = {
            "meta": {"algo": self.algo, "env": self.config.env.id, "wall_clock_s": self.wall_clock(), **meta},
            **state,
        }
        atomic_write(self.checkpoint_path, lambda f: torch.save(state, f))
        self.last_checkpoint_time = time.perf_counter()

    def stop_if_signalled(self, unit: str, done: int, total: int | None) -> None:
        if StopSignal.received:
            of_total = f" of {total}" if total is not None else ""
            raise Preempted(
                f"{StopSignal.received} received: stopped after {unit} {done}{of_total} with a "
                f"checkpoint; continue with resume={self.dir}"
            )

    def check_finite(self, where: str, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            if not np.isfinite(value):
                raise NonFiniteError(
                    f"{tag} became {value} at {where}; the last good checkpoint is kept at {self.checkpoint_path}"
                )

    def write_summary(self, results: dict) -> dict:
        summary = {
            "algo": self.algo,
            "env": self.config.env.id,
            "seed": self.config.run.seed,
            **results,
            "versions": library_versions(),
            "git_commit": git_commit(),
        }
        self.writer.close()
        atomic_write(self.dir / "summary.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
        return summary
