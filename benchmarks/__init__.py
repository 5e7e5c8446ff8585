"""Scripts that measure and compare; each writes its tables and plots to results/ with the command that made them."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def train_in_subprocess(run_dir: Path, overrides: list[str]) -> float:
    """`python -m algos <overrides> hydra.run.dir=<run_dir>` in its own process (a run that finds a checkpoint
    there resumes); returns the wall-clock seconds, raises CalledProcessError if the run fails."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "algos", *overrides, f"hydra.run.dir={run_dir}"], cwd=ROOT, check=True)
    return time.perf_counter() - start
