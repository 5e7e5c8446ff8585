"""Atari learning runs with the published PPO settings (conf/tuned/ppo_clip_atari.yaml, CleanRL ppo_atari), several
seeds per game, then the report (curves and final scores with 95% bootstrap CIs; benchmarks/report.py).

    python -m benchmarks.atari_learning                                    # Breakout, 3 seeds x 1M steps, CPU
    python -m benchmarks.atari_learning --games breakout pong --steps 10000000 --jobs 3   # the 10M-step runs
    python -m benchmarks.atari_learning --algos a2c trpo pg ppo_penalty --seeds 1 --steps 100000   # the others

It runs, into a new folder results/runs/atari-<time>/:
  python -m algos -m algo=<algos> env=<games> seed=<seeds> total_timesteps=<steps> [hydra/launcher=joblib ...]
  python -m benchmarks.report <runs> --out <out>
The report's curves are raw whole-game training scores (charts/episodic_return); its final column is the
10-episode greedy evaluation at the end. Compare with CleanRL's ppo_atari.py at 10M steps (3 seeds): Breakout
414.66 +- 28.09, Pong 20.36 +- 0.20, BeamRider 1915.93 +- 484.58.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLEANRL_10M = {"breakout": "414.66 +- 28.09", "pong": "20.36 +- 0.20", "beamrider": "1915.93 +- 484.58"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", nargs="+", default=["breakout"], help="conf/env names, e.g. breakout pong")
    parser.add_argument("--algos", nargs="+", default=["ppo_clip"], help="conf/algo names")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (one torch thread each)")
    parser.add_argument("--out", type=Path, default=Path("results", "atari_learning"), help="relative to the repo")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides for every run, e.g. eval_episodes=30")
    args = parser.parse_args()

    runs = Path("results", "runs", time.strftime("atari-%Y%m%d-%H%M%S"))  # relative to ROOT, the cwd of each step
    overrides = [
        f"algo={','.join(args.algos)}",
        f"env={','.join(args.games)}",
        f"seed={','.join(map(str, args.seeds))}",
        f"total_timesteps={args.steps}",
        f"hydra.sweep.dir={runs}",
        *args.overrides,
    ]
    if args.jobs > 1:
        overrides += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}"]
    load_before, start = os.getloadavg()[0], time.perf_counter()
    print("atari_learning: python -m algos -m", " ".join(overrides), flush=True)
    code = subprocess.run([sys.executable, "-m", "algos", "-m", *overrides], cwd=ROOT).returncode
    anchors = "; ".join(f"{g} {CLEANRL_10M[g]}" for g in args.games if g in CLEANRL_10M)
    note = (
        f"Runs: {runs} (git-ignored), {args.steps} steps each, {(time.perf_counter() - start) / 3600:.1f} h wall, "
        f"{args.jobs} runs at a time on {os.cpu_count()} cores, one torch thread each; 1-minute load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after. Published anchor, CleanRL ppo_atari.py at "
        f"10M steps, 3 seeds: {anchors or 'none for these games'}."
    )
    made_by = (
        f"python -m benchmarks.atari_learning --algos {' '.join(args.algos)} --games {' '.join(args.games)} "
        f"--seeds {' '.join(map(str, args.seeds))} --steps {args.steps} --jobs {args.jobs} "
        f"{' '.join(args.overrides)}"
    )
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.report",
            str(runs),
            "--out",
            str(args.out),
            "--made-by",
            made_by,
            "--note",
            note,
        ],
        cwd=ROOT,
    )
    return code or report.returncode


if __name__ == "__main__":
    sys.exit(main())
