"""Our PPO-clip against Stable-Baselines3's PPO on Breakout, side by side in one run: steps per second, where
our time goes (emulator, network forward in rollouts, update), and how close the update runs to the CPU's dense
arithmetic rate (the update is the arithmetic both libraries must do).

Both use CleanRL's ppo_atari settings (conf/tuned/ppo_clip_atari.yaml): 8 envs x 128 steps, 4 epochs of 4
minibatches (256 samples), Adam lr 2.5e-4 annealed linearly (eps 1e-5), clip 0.1 on the policy and the value,
entropy 0.01, value coefficient 0.5, gamma 0.99, lambda 0.95, gradient norm 0.5, the Nature CNN, the same number
of torch threads (`--threads`, default one). Ours steps ale-py's AtariVectorEnv (envs/atari.py); SB3 steps its
AtariWrapper stack on BreakoutNoFrameskip-v4 in a DummyVecEnv with VecFrameStack(4), as rl-baselines3-zoo does.
Each job is its own process, the libraries alternate order from round to round, and neither evaluates at the
end: this measures training throughput only (environment steps / training wall time, set-up excluded).

    python -m benchmarks.atari_speed --steps 50000 --rounds 1
    python -m benchmarks.atari_speed --steps 25000 --rounds 2 --threads 2 --out atari_speed_2_threads.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"


class Stopwatch:
    """Accumulated seconds spent inside the wrapped callables; `sync` (a GPU's synchronize) drains the device's
    queue before each reading, so that work launched inside is counted inside."""

    def __init__(self, sync: Callable[[], None] = lambda: None) -> None:
        self.sync, self.seconds = sync, dict[str, float]()

    def wrap(self, name: str, fn):
        self.seconds[name] = 0.0

        def timed(*args, **kwargs):
            self.sync()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                self.seconds[name] += time.perf_counter() - start

        return timed


def time_emulator(watch: Stopwatch) -> None:
    """Every Atari vector env made from here on counts its steps under `watch`'s "emulator" (this process only)."""
    import envs.atari

    make_envs = envs.atari.make_vector_env

    def timed_envs(*args, **kwargs):
        vector_env = make_envs(*args, **kwargs)
        vector_env.step = watch.wrap("emulator", vector_env.step)
        return vector_env

    envs.atari.make_vector_env = timed_envs


def no_evaluation(agent, env, episodes: int, seed: int, placement=None) -> np.ndarray:
    return np.zeros(episodes)


def run_ours(seed: int, steps: int, threads: int) -> dict:
    import tempfile

    from hydra import compose, initialize_config_dir

    from algos import networks, ppo_clip, rollout, run
    from algos.registry import store_algorithm_defaults

    store_algorithm_defaults()
    watch = Stopwatch()
    time_emulator(watch)
    # timing wrappers patched over the methods for this process only (it runs one job and exits)
    networks.Agent.act = watch.wrap("forward", networks.Agent.act)  # type: ignore[method-assign]
    rollout.Rollout.collect = watch.wrap("rollout", rollout.Rollout.collect)  # type: ignore[method-assign]
    run.evaluate_policy = no_evaluation  # speed only
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "algo=ppo_clip",
                "env=breakout",
                f"seed={seed}",
                f"total_timesteps={steps}",
                "checkpoint_interval_s=1e9",
                f"torch_threads={threads}",
            ],
        )
    summary = ppo_clip.train(cfg, Path(tempfile.mkdtemp(prefix="bench-atari-ours-")))
    wall, s = summary["wall_clock_s"], watch.seconds
    shares = {
        "emulator": s["emulator"] / wall,
        "forward": s["forward"] / wall,
        "rest_of_rollout": (s["rollout"] - s["emulator"] - s["forward"]) / wall,
        "update": (wall - s["rollout"]) / wall,
    }
    return {"steps": summary["total_env_steps"], "wall_s": wall, "shares": shares}


def run_sb3(seed: int, steps: int, threads: int) -> dict:
    import ale_py
    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.utils import LinearSchedule
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    torch.set_num_threads(threads)
    env = VecFrameStack(make_atari_env("BreakoutNoFrameskip-v4", n_envs=8, seed=seed), n_stack=4)
    model = PPO(
        "CnnPolicy",
        env,
        n_steps=128,
        batch_size=256,
        n_epochs=4,
        learning_rate=LinearSchedule(2.5e-4, 0.0, 1.0),
        clip_range=0.1,
        clip_range_vf=0.1,
        ent_coef=0.01,
        vf_coef=0.5,
        max_grad_norm=0.5,
        gamma=0.99,
        gae_lambda=0.95,
        seed=seed,
        device="cpu",
    )
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    return {"steps": int(model.num_timesteps), "wall_s": time.perf_counter() - start}


def arithmetic_rates(threads: int, minibatch: int = 256) -> dict:
    """GFLOP/s of one update minibatch (the Nature CNN's forward and backward, FLOPs counted by torch's
    FlopCounterMode) against a 1024 x 1024 float32 matrix product on the same threads."""
    import gymnasium as gym
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from algos.networks import make_agent
    from algos.settings import NetSettings

    torch.set_num_threads(threads)
    agent = make_agent(
        gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), gym.spaces.Discrete(4), NetSettings([64, 64], "tanh", False)
    )
    obs = torch.randint(0, 256, (minibatch, 4, 84, 84), dtype=torch.uint8)
    actions = torch.randint(0, 4, (minibatch,))

    def forward_backward():
        logprob, entropy, value = agent.evaluate(obs, actions)
        (logprob.mean() + entropy.mean() + value.mean()).backward()

    with FlopCounterMode(display=False) as counter:
        forward_backward()
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    return {
        "minibatch": minibatch,
        "minibatch_gflop": counter.get_total_flops() / 1e9,
        "update_gflops": gflops_per_second(forward_backward, counter.get_total_flops()),
        "matmul_gflops": gflops_per_second(lambda: a @ b, 2 * 1024**3),
    }


def gflops_per_second(fn, flops: int, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return flops * repeats / (time.perf_counter() - start) / 1e9


def job(lib: str, seed: int, steps: int, threads: int) -> dict:
    """One job in a fresh process, so neither library warms the other's caches or threads."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.atari_speed",
            "--job",
            lib,
            "--seed",
            str(seed),
            "--steps",
            str(steps),
            "--threads",
            str(threads),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the {lib} job failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=1, help="pairs of jobs; the order alternates")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each library")
    parser.add_argument("--out", default="atari_speed.md", help="file name under results/")
    parser.add_argument("--job", choices=["ours", "sb3", "rates"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        jobs = {"ours": run_ours, "sb3": run_sb3, "rates": lambda seed, steps, threads: arithmetic_rates(threads)}
        print(json.dumps(jobs[args.job](args.seed, args.steps, args.threads)))
        return

    rows, load_before = [], os.getloadavg()
    for i in range(args.rounds):
        for lib in ["ours", "sb3"] if i % 2 == 0 else ["sb3", "ours"]:
            result = {"lib": lib, "round": i, **job(lib, args.seed, args.steps, args.threads)}
            result["sps"] = result["steps"] / result["wall_s"]
            rows.append(result)
            print(f"{lib:5s} round {i}: {result['sps']:.1f} steps/s ({result['wall_s']:.1f} s)", flush=True)
    rates = job("rates", args.seed, args.steps, args.threads)
    write_results(rows, rates, args, load_before, os.getloadavg())


def rate_needed_for_twice_sb3(ours: list[dict], update_share: float, sb3_sps: float, update_gflops: float) -> str:
    """The update's arithmetic rate at which our throughput would be 2x SB3's, the rest of our time unchanged."""
    steps, wall = np.mean([r["steps"] for r in ours]), np.mean([r["wall_s"] for r in ours])
    update_s = wall * update_share
    allowed_update_s = steps / (2 * sb3_sps) - (wall - update_s)
    if allowed_update_s <= 0:
        return "in less than no time (not reachable)"
    return f"at {update_gflops * update_s / allowed_update_s:.0f} GFLOP/s or more"


def write_results(rows: list[dict], rates: dict, args, load_before, load_after) -> None:
    import stable_baselines3
    import torch

    ours = [r for r in rows if r["lib"] == "ours"]
    sb3 = [r for r in rows if r["lib"] == "sb3"]

    def sps(rs):
        return f"{np.mean([r['sps'] for r in rs]):.1f}"

    shares = {k: np.mean([r["shares"][k] for r in ours]) for k in ours[0]["shares"]}
    twice_sb3 = rate_needed_for_twice_sb3(ours, shares["update"], float(sps(sb3)), rates["update_gflops"])
    command = (
        f"python -m benchmarks.atari_speed --steps {args.steps} --rounds {args.rounds} --seed {args.seed} "
        f"--threads {args.threads} --out {args.out}"
    )
    lines = [
        f"# PPO-clip vs Stable-Baselines3 PPO on Breakout: training throughput, {args.threads} torch thread(s) each",
        "",
        f"Command: `{command}`  ",
        f"Machine: {os.cpu_count()} cores ({platform.machine()}), 1-minute load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after; torch {torch.__version__}, "
        f"SB3 {stable_baselines3.__version__}; {args.steps} environment steps per job, CleanRL ppo_atari settings; "
        f"steps/s = environment steps / training wall time (set-up and evaluation excluded).",
        "",
        "| library | environments | jobs | steps/s |",
        "|---|---|---|---|",
        f"| tokengym ppo_clip | ale-py AtariVectorEnv | {len(ours)} | {sps(ours)} |",
        f"| SB3 PPO | AtariWrapper, DummyVecEnv, VecFrameStack | {len(sb3)} | {sps(sb3)} |",
        "",
        f"Throughput ratio ours / SB3: {float(sps(ours)) / float(sps(sb3)):.2f}.",
        "",
        "Where our training time goes (share of wall time):",
        "",
        "| emulator (vector env step) | network forward in rollouts | rest of the rollout (GAE, tensors) | update |",
        "|---|---|---|---|",
        f"| {shares['emulator']:.1%} | {shares['forward']:.1%} | {shares['rest_of_rollout']:.1%} | "
        f"{shares['update']:.1%} |",
        "",
        f"Arithmetic rate, one process with {args.threads} thread(s): one update minibatch ({rates['minibatch']} "
        f"samples, the Nature CNN's forward and backward, {rates['minibatch_gflop']:.1f} GFLOP counted by torch's "
        f"FlopCounterMode) runs at {rates['update_gflops']:.0f} GFLOP/s, a 1024 x 1024 float32 matrix product at "
        f"{rates['matmul_gflops']:.0f} GFLOP/s. For 2x SB3's throughput with the rest of our time as measured, "
        f"the update would have to run {twice_sb3} (our update also spends time outside the network: Adam, the "
        f"loss, gathering minibatches).",
        "",
        "| library | round | steps | wall (s) | steps/s |",
        "|---|---|---|---|---|",
        *[f"| {r['lib']} | {r['round']} | {r['steps']} | {r['wall_s']:.1f} | {r['sps']:.1f} |" for r in rows],
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
