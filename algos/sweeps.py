"""Sweeps: a progress display for any Hydra launcher, and a multi-seed objective for hyperparameter search.

Progress (`SweepProgress`, registered under `hydra.callbacks` in conf/config.yaml): each job of a multirun writes
its state to `<job folder>/job_status.txt` (`running`, `done` or `failed: <error>`) when it starts and ends; the
process that launched the sweep counts those files and prints a line whenever the counts change. Files in the
sweep folder work the same for joblib's processes, Ray workers and SLURM nodes (on a cluster, the sweep folder
must be on a filesystem that the nodes share with the launching machine).

Multi-seed objective (`python -m algos.sweeps`): the same config and overrides as `python -m algos`, but each
job trains one run per seed in `seeds` (folders `seed<s>/` inside the job folder) and returns the mean of their
final evaluation means, so a sweeper ranks hyperparameters on several seeds, never on one lucky seed (rl-zoo
#204). Every trial uses the same seeds, so trials differ by their hyperparameters, not by their luck.

    python -m algos.sweeps -m +sweep=ppo_clip_cartpole        # the Optuna search in conf/sweep/
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import sys
import threading
import time
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from algos.cli import CONF_DIR, check_algo_keys
from core.errors import ConfigError

STATUS_FILE = "job_status.txt"


# --------------------------------------------------------------------------------------------------- progress
def write_status(job_dir: Path, status: str) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    tmp = job_dir / f"{STATUS_FILE}.tmp"
    tmp.write_text(status + "\n")
    os.replace(tmp, job_dir / STATUS_FILE)


def failure_text(job_return: JobReturn) -> str:
    err = job_return._return_value  # JobReturn keeps the exception here; .return_value would raise it
    lines = str(err).strip().splitlines()
    return f"failed: {type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def planned_jobs(config: DictConfig) -> int | None:
    """How many jobs the sweep will launch: Optuna's n_trials, or the product of the basic sweeper's choice and
    range sweeps; None where that takes the sweeper itself to know (glob sweeps, other sweepers)."""
    sweeper = config.hydra.sweeper
    if "n_trials" in sweeper:
        return int(sweeper.n_trials)
    if not sweeper._target_.endswith("BasicSweeper"):
        return None
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    total = 1
    for override in OverridesParser.create().parse_overrides(params + list(config.hydra.overrides.task)):
        if override.is_sweep_override():
            if override.value_type == ValueType.GLOB_CHOICE_SWEEP:
                return None
            total *= len(list(override.sweep_iterator()))
    return total


class ProgressWatcher:
    """Counts the job status files under a sweep folder (those written since the sweep started, so a resumed
    Optuna study counts only its new trials) and prints a line when the counts change."""

    def __init__(self, sweep_dir: Path, total: int | None, interval_s: float):
        self.sweep_dir, self.total, self.interval_s = sweep_dir, total, interval_s
        self.started = time.time() - 1.0  # mtime resolution
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True, name="sweep-progress")
        self.last_line = ""
        self.finished = False

    def statuses(self) -> dict[Path, str]:
        found = {}
        for path in self.sweep_dir.rglob(STATUS_FILE):
            try:
                if path.stat().st_mtime >= self.started:
                    found[path.parent] = path.read_text().strip()
            except OSError:
                continue  # replaced between listing and reading; the next poll sees it
        return found

    def line(self, statuses: dict[Path, str]) -> str:
        states = list(statuses.values())
        done, running = states.count("done"), states.count("running")
        failed = sum(s.startswith("failed") for s in states)
        of = f"/{self.total}" if self.total is not None else ""
        return f"[sweep] {done + failed}{of} jobs finished: {done} done, {failed} failed, {running} running"

    def _watch(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            self._print_if_changed(self.statuses())

    def _print_if_changed(self, statuses: dict[Path, str]) -> None:
        line = self.line(statuses)
        if line != self.last_line:
            print(line, file=sys.stderr, flush=True)
            self.last_line = line

    def start(self) -> None:
        self.thread.start()
        atexit.register(self.finish)  # a sweep that raises never reaches on_multirun_end

    def finish(self) -> None:
        """Stop watching; print the final counts, each job that failed or never finished, and the next step."""
        if self.finished:
            return
        self.finished = True
        self.stop_event.set()
        statuses = self.statuses()
        self._print_if_changed(statuses)
        for job_dir, status in sorted(statuses.items()):
            if status != "done":
                shown = status if status.startswith("failed") else "stopped before it finished"
                print(f"[sweep]   {job_dir.relative_to(self.sweep_dir)}: {shown}", file=sys.stderr)
        print(f"[sweep] tables and curves: python -m benchmarks.report {self.sweep_dir}", file=sys.stderr, flush=True)


class SweepProgress(Callback):
    def __init__(self, interval_s: float = 2.0):
        self.interval_s = interval_s
        self.watcher: ProgressWatcher | None = None

    def __getstate__(self) -> dict:
        # Launchers pickle the callbacks into their workers; the watcher thread stays in the launching process.
        return {"interval_s": self.interval_s, "watcher": None}

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)  # also where an Optuna sqlite storage goes
        self.watcher = ProgressWatcher(sweep_dir, planned_jobs(config), self.interval_s)
        self.watcher.start()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self.watcher is not None:
            self.watcher.finish()

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            write_status(Path(config.hydra.runtime.output_dir), "running")

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            ok = job_return.status == JobStatus.COMPLETED
            write_status(Path(config.hydra.runtime.output_dir), "done" if ok else failure_text(job_return))


# --------------------------------------------------------------------------------------------------- objective
def train_seeds(cfg: DictConfig, job_dir: Path) -> float:
    """One run per seed in `cfg.seeds` (in `job_dir/seed<s>`); returns the mean of their final evaluation means
    and writes it, with each seed's, to `job_dir/objective.json`."""
    seeds = cfg.get("seeds")
    if not seeds:
        raise ConfigError(
            "python -m algos.sweeps trains several seeds per job: give them with +seeds=[0,1,2] "
            "or use a preset such as +sweep=ppo_clip_cartpole"
        )
    algo = importlib.import_module(f"algos.{cfg.algo.name}")
    eval_means = []
    for seed in seeds:
        seed_cfg = OmegaConf.merge(cfg, {"seed": int(seed)})
        eval_means.append(algo.train(seed_cfg, job_dir / f"seed{seed}")["eval"]["mean"])
    objective = float(np.mean(eval_means))
    (job_dir / "objective.json").write_text(
        json.dumps({"objective": objective, "seeds": list(seeds), "eval_means": eval_means}, indent=2)
    )
    return objective


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def run_trial(cfg: DictConfig) -> float:
    """A Hydra task like algos.cli.run_job, over several seeds. Errors are raised, not turned into an exit, so
    that Hydra records the job as failed and the sweeper goes on with (or stops at) its failure policy."""
    return train_seeds(cfg, Path(HydraConfig.get().runtime.output_dir))


def main() -> None:
    check_algo_keys(sys.argv[1:])
    run_trial()


if __name__ == "__main__":
    main()
