"""The five algorithms on classic control with the shipped defaults (conf/), several seeds, one table.

Each job is `python -m algos algo=A env=E seed=S` in its own process (one torch thread), `--jobs` at a time;
the table (markdown + CSV in results/) gives each algorithm's final evaluation, mean +- std over seeds of the
per-seed mean over 10 deterministic episodes, and the wall time. Failed jobs are listed, not dropped.

    python -m benchmarks.classic_control --algos pg a2c trpo ppo_penalty ppo_clip --envs cartpole acrobot pendulum \
        --seeds 0 1 2 --jobs 2
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ALGOS = ["pg", "a2c", "trpo", "ppo_penalty", "ppo_clip"]
SOLVED_AT = {"CartPole-v1": 475.0}  # the registered reward thresholds we check


def run_job(algo: str, env: str, seed: int, runs_dir: Path) -> tuple[str, str, int, dict | str]:
    run_dir = runs_dir / f"{algo}-{env}-seed{seed}"
    out = subprocess.run(
        [sys.executable, "-m", "algos", f"algo={algo}", f"env={env}", f"seed={seed}", f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        return algo, env, seed, out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"
    return algo, env, seed, json.loads((run_dir / "summary.json").read_text())


def table_rows(results) -> list[dict]:
    rows = []
    for algo in ALGOS:
        for env in dict.fromkeys(r[1] for r in results):
            done = [r[3] for r in results if r[0] == algo and r[1] == env and isinstance(r[3], dict)]
            if not done:
                continue
            means = [s["eval"]["mean"] for s in done]
            threshold = SOLVED_AT.get(done[0]["env"])
            rows.append(
                {
                    "algo": algo,
                    "env": done[0]["env"],
                    "steps": done[0]["total_env_steps"],
                    "seeds": len(done),
                    "eval_mean": np.mean(means),
                    "eval_std_over_seeds": np.std(means),
                    "per_seed": " / ".join(f"{m:.1f}" for m in means),
                    "solved": f"{sum(m >= threshold for m in means)}/{len(means)}" if threshold else "",
                    "wall_s": np.mean([s["wall_clock_s"] for s in done]),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=ALGOS, choices=ALGOS)
    parser.add_argument("--envs", nargs="+", default=["cartpole", "acrobot", "pendulum"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--name", default="classic_control", help="results/<name>.md and .csv")
    args = parser.parse_args()

    runs_dir = ROOT / "results" / "runs" / args.name
    jobs = [(a, e, s) for e in args.envs for a in args.algos for s in args.seeds]

    def run_one(job: tuple[str, str, int]) -> tuple[str, str, int, dict | str]:
        return run_job(*job, runs_dir)

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run_one, jobs))
    rows = table_rows(results)

    command = (
        f"python -m benchmarks.classic_control --algos {' '.join(args.algos)} --envs {' '.join(args.envs)} "
        f"--seeds {' '.join(map(str, args.seeds))} --jobs {args.jobs} --name {args.name}"
    )
    lines = [
        f"# Classic control, shipped defaults, {len(args.seeds)} seeds",
        "",
        f"Command: `{command}`  ",
        "Final evaluation: 10 episodes, deterministic policy; mean +- std over seeds of each seed's mean. "
        f"Wall time: training only, mean over seeds, {args.jobs} jobs at a time on this machine.",
        "",
        "| algorithm | env | steps | seeds | eval mean +- std | per seed | solved | wall (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['algo']} | {r['env']} | {r['steps']} | {r['seeds']} | {r['eval_mean']:.1f} +- "
        f"{r['eval_std_over_seeds']:.1f} | {r['per_seed']} | {r['solved']} | {r['wall_s']:.1f} |"
        for r in rows
    ]
    failed = [r for r in results if not isinstance(r[3], dict)]
    if failed:
        lines += ["", "Failed jobs:", *[f"- {a} {e} seed {s}: {err}" for a, e, s, err in failed]]
    out = ROOT / "results" / f"{args.name}.md"
    out.write_text("\n".join(lines) + "\n")
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["algo"])
        writer.writeheader()
        writer.writerows(rows)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
