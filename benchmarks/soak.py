"""Soak test: does a long run leak memory or file handles, and does a large sweep leave anything behind?

1. Long runs, each given with `--long` as command-line overrides (e.g. PPO-clip on CartPole-v1 for 2M steps,
   200 PPO updates on a text task). Resident memory (VmRSS) and open file descriptors are read from /proc every
   `--every` seconds; after a warm-up (the first 20% of samples) both should stay flat. Reported: min / max /
   growth after warm-up.
2. A many-job Hydra multirun (default 50 tiny jobs). Reported: job or launcher-worker processes orphaned by it
   (still alive with init as parent once it has finished), and entries added to the temporary directory.

    python -m benchmarks.soak --jobs 50 --long "algo=ppo_clip env=cartpole total_timesteps=2000000" \
        --long "algo=ppo_clip env=text env.task=examples/terse_task.py:make_task env.policy_model=<LM> ..."
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sample(pid: int) -> tuple[float, int] | None:
    """(resident memory in MiB, open file descriptors) of a live process, or None once it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        return rss_kib / 1024, len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, StopIteration):
        return None


def long_run(overrides: list[str], every: float, run_dir: Path) -> list[tuple[float, float, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "algos", *overrides, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    start, samples = time.time(), []
    while proc.poll() is None:
        point = sample(proc.pid)
        if point:
            samples.append((time.time() - start, *point))
        time.sleep(every)
    if proc.returncode != 0:
        assert proc.stderr is not None  # stderr=PIPE above
        sys.exit(f"the long run failed: {proc.stderr.read().decode()[-2000:]}")
    return samples


SWEEP_PROCESSES = (b"algos", b"loky", b"joblib", b"ray", b"submitit")  # job and launcher-worker command lines


def orphaned_sweep_processes() -> set[int]:
    """Job or launcher-worker processes whose parent has exited (re-parented to init): what a finished sweep
    could leave behind. Other programs on the machine are not counted."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if "\nPPid:\t1\n" in status and any(word in cmdline for word in SWEEP_PROCESSES):
                found.add(int(pid))
        except OSError:
            continue
    return found


def sweep(jobs: int, sweep_dir: Path, launcher: str) -> dict:
    tmp_before, orphans_before = set(os.listdir(tempfile.gettempdir())), orphaned_sweep_processes()
    seeds = ",".join(map(str, range(jobs)))
    cmd = [
        sys.executable,
        "-m",
        "algos",
        "-m",
        "algo=ppo_clip",
        "env=cartpole",
        f"seed={seeds}",
        "total_timesteps=2048",
        "eval_episodes=1",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    if launcher != "basic":
        cmd.append(f"hydra/launcher={launcher}")
    start = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    time.sleep(2)  # give exiting workers a moment, as a user's next command would
    return {
        "jobs": jobs,
        "launcher": launcher,
        "seconds": time.time() - start,
        "finished": len(list(sweep_dir.glob("*/summary.json"))),
        "leftover_processes": sorted(orphaned_sweep_processes() - orphans_before),
        "new_temp_entries": sorted(set(os.listdir(tempfile.gettempdir())) - tmp_before),
    }


def flatness(samples: list[tuple[float, float, int]]) -> dict:
    after = samples[len(samples) // 5 :]
    rss = [s[1] for s in after]
    fds = [s[2] for s in after]
    return {
        "samples": len(samples),
        "rss_min": min(rss),
        "rss_max": max(rss),
        "rss_growth": rss[-1] - rss[0],
        "fd_min": min(fds),
        "fd_max": max(fds),
        "seconds": samples[-1][0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long", action="append", help="overrides of one long run (repeatable)")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--launcher", default="basic", help="hydra/launcher for the sweep (basic, joblib, ...)")
    parser.add_argument("--out", default="results/soak.md")
    args = parser.parse_args()

    runs = args.long or []
    work = Path(tempfile.mkdtemp(prefix="tokengym-soak-", dir=ROOT / "results" / "runs"))
    curves = {run: long_run(run.split(), args.every, work / f"long{i}") for i, run in enumerate(runs)}
    swept = sweep(args.jobs, work / "sweep", args.launcher)

    command = (
        f"python -m benchmarks.soak --jobs {args.jobs} --launcher {args.launcher} --every {args.every} "
        f"--out {args.out} " + " ".join(f'--long "{run}"' for run in runs)
    )
    lines = ["# Soak: memory and file handles over long runs; leftovers after a sweep", "", f"Command: `{command}`", ""]
    if curves:
        lines += [
            "After warm-up (the first 20% of samples dropped):",
            "",
            "| long run | seconds | samples | resident memory min / max (MiB) | last - first (MiB) | open fds |",
            "|---|---|---|---|---|---|",
        ]
    for run, samples in curves.items():
        flat = flatness(samples)
        lines.append(
            f"| `{run}` | {flat['seconds']:.0f} | {flat['samples']} | {flat['rss_min']:.1f} / "
            f"{flat['rss_max']:.1f} | {flat['rss_growth']:+.1f} | {flat['fd_min']}-{flat['fd_max']} |"
        )
    lines += [
        "",
        f"Sweep: {swept['jobs']} jobs with the {swept['launcher']} launcher, {swept['seconds']:.0f} s, "
        f"{swept['finished']} finished; orphaned job or worker processes left running: "
        f"{len(swept['leftover_processes'])}; "
        f"new entries in {tempfile.gettempdir()}: {len(swept['new_temp_entries'])}"
        + (f" ({', '.join(swept['new_temp_entries'][:10])})" if swept["new_temp_entries"] else ""),
        "",
    ]
    out = ROOT / args.out
    out.write_text("\n".join(lines))
    with open(out.with_suffix(".csv"), "w") as f:
        f.write("run,seconds,rss_mib,open_fds\n")
        for run, samples in curves.items():
            f.writelines(f"{run},{t:.1f},{rss:.1f},{fd}\n" for t, rss, fd in samples)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
