"""Wall time of one sweep run serially (Hydra's basic launcher) and in parallel (the joblib launcher).

    python -m benchmarks.launcher_speedup [--jobs 2] [--total-timesteps 30000]

The sweep is the standard benchmark's 50 jobs (pg, a2c, trpo, ppo_penalty, ppo_clip x CartPole-v1, Acrobot-v1 x
seeds 0-4) at a small budget, so that both passes take minutes; each job has one torch thread. Wall time is the
whole command, Hydra's start-up included. Writes results/launcher_speedup.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ["algo=pg,a2c,trpo,ppo_penalty,ppo_clip", "env=cartpole,acrobot", "seed=0,1,2,3,4"]


def timed_sweep(launcher: list[str], sweep_dir: Path, steps: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "algos",
        "-m",
        *SWEEP,
        f"total_timesteps={steps}",
        *launcher,
        f"hydra.sweep.dir={sweep_dir}",
    ]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    code = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL).returncode
    return {
        "command": " ".join(["python", *command[1:]]),
        "wall_s": time.perf_counter() - start,
        "exit": code,
        "load_before": load,
        "load_after": os.getloadavg()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--total-timesteps", type=int, default=30_000)
    parser.add_argument("--out", type=Path, default=Path("results", "launcher_speedup.md"))
    args = parser.parse_args()

    runs = Path("results", "runs", time.strftime("speedup-%Y%m%d-%H%M%S"))
    serial = timed_sweep([], runs / "serial", args.total_timesteps)
    parallel = timed_sweep(
        ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}"], runs / "joblib", args.total_timesteps
    )
    ratio = parallel["wall_s"] / serial["wall_s"]
    lines = [
        "# Sweep wall time: joblib launcher vs serial",
        "",
        f"Made by: `python -m benchmarks.launcher_speedup --jobs {args.jobs} --total-timesteps "
        f"{args.total_timesteps}` on {os.cpu_count()} cores (other work shared the machine; 1-minute load "
        f"averages below). 50 jobs: 5 algorithms x CartPole-v1, Acrobot-v1 x 5 seeds, "
        f"total_timesteps={args.total_timesteps} (a small budget, so both passes take minutes), one torch "
        f"thread per job. Runs: {runs} (git-ignored).",
        "",
        "| launcher | wall time (s) | exit | load before | load after | command |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in (("basic (serial)", serial), (f"joblib, n_jobs={args.jobs}", parallel)):
        lines.append(
            f"| {name} | {result['wall_s']:.1f} | {result['exit']} | {result['load_before']:.2f} | "
            f"{result['load_after']:.2f} | `{result['command']}` |"
        )
    lines += ["", f"Ratio joblib / serial: **{ratio:.2f}**."]
    (ROOT / args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return serial["exit"] or parallel["exit"]


if __name__ == "__main__":
    sys.exit(main())
