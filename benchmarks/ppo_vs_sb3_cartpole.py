"""Our PPO-clip against Stable-Baselines3's PPO on CartPole-v1, side by side in one run.

Both use rl-baselines3-zoo's tuned CartPole set (8 envs x 32 steps, batch 256, 20 epochs, gamma 0.98,
lambda 0.8, lr 1e-3 and clip 0.2 annealed linearly to 0, no entropy bonus, 64-64 tanh MLPs), the same number of
steps and one torch thread. Each job is its own process; the two libraries alternate, so drifts in machine speed
fall on both. Wall time covers building the envs and the model plus training (not imports, not evaluation).
Final evaluation: 10 episodes with the deterministic policy, for both.

    python -m benchmarks.ppo_vs_sb3_cartpole --seeds 0 1 2 --steps 100000
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import cast

import numpy as np

RESULTS = Path(__file__).resolve().parent.parent / "results"


def run_ours(seed: int, steps: int) -> dict:
    import tempfile
    import time

    from hydra import compose, initialize_config_dir

    from algos import ppo_clip
    from algos.registry import store_algorithm_defaults

    store_algorithm_defaults()
    conf = str(Path(__file__).resolve().parent.parent / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["algo=ppo_clip", "env=cartpole", f"seed={seed}", f"total_timesteps={steps}"],
        )
    start = time.perf_counter()
    summary = ppo_clip.train(cfg, Path(tempfile.mkdtemp(prefix="bench-ours-")))
    return {
        "wall_s": summary["wall_clock_s"],
        "eval_mean": summary["eval"]["mean"],
        "steps": summary["total_env_steps"],
        "wall_with_setup_s": time.perf_counter() - start,
    }


def run_sb3(seed: int, steps: int) -> dict:
    import time

    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.utils import get_linear_fn

    torch.set_num_threads(1)
    start = time.perf_counter()
    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=32,
        batch_size=256,
        n_epochs=20,
        gamma=0.98,
        gae_lambda=0.8,
        learning_rate=get_linear_fn(1e-3, 0.0, 1.0),
        clip_range=get_linear_fn(0.2, 0.0, 1.0),
        ent_coef=0.0,
        seed=seed,
        device="cpu",
    )
    model.learn(total_timesteps=steps)
    wall = time.perf_counter() - start
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=seed + 10_000)
    # SB3 annotates both return shapes as one union; without return_episode_rewards it is (mean, std)
    mean, _ = cast(tuple[float, float], evaluate_policy(model, eval_env, n_eval_episodes=10, deterministic=True))
    return {"wall_s": wall, "eval_mean": float(mean), "steps": int(model.num_timesteps)}


def job(lib: str, seed: int, steps: int) -> dict:
    """Run one job in a fresh process, so neither library warms the other's caches or threads."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.ppo_vs_sb3_cartpole",
            "--job",
            lib,
            "--seeds",
            str(seed),
            "--steps",
            str(steps),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--job", choices=["ours", "sb3"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        print(json.dumps((run_ours if args.job == "ours" else run_sb3)(args.seeds[0], args.steps)))
        return

    rows = []
    for i, seed in enumerate(args.seeds):
        order = ["ours", "sb3"] if i % 2 == 0 else ["sb3", "ours"]
        for lib in order:
            result = job(lib, seed, args.steps)
            rows.append({"lib": lib, "seed": seed, **result})
            print(f"{lib:5s} seed {seed}: {result['wall_s']:.2f} s, eval {result['eval_mean']:.1f}", flush=True)
    write_results(rows, args)


def write_results(rows: list[dict], args) -> None:
    ours = [r for r in rows if r["lib"] == "ours"]
    sb3 = [r for r in rows if r["lib"] == "sb3"]
    ratios = [o["wall_s"] / s["wall_s"] for o, s in zip(ours, sb3)]

    def fmt(xs):
        return f"{np.mean(xs):.2f} +- {np.std(xs):.2f}"

    command = f"python -m benchmarks.ppo_vs_sb3_cartpole --seeds {' '.join(map(str, args.seeds))} --steps {args.steps}"
    import stable_baselines3
    import torch

    lines = [
        "# PPO-clip vs Stable-Baselines3 PPO, CartPole-v1, rl-zoo tuned settings, one thread each",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"SB3 {stable_baselines3.__version__}; {args.steps} steps; wall = env + model set-up + training.",
        "",
        "| library | seeds | wall time (s) | final eval (10 episodes, deterministic) |",
        "|---|---|---|---|",
        f"| tokengym ppo_clip | {len(ours)} | {fmt([r['wall_s'] for r in ours])} | "
        f"{fmt([r['eval_mean'] for r in ours])} |",
        f"| SB3 PPO | {len(sb3)} | {fmt([r['wall_s'] for r in sb3])} | {fmt([r['eval_mean'] for r in sb3])} |",
        "",
        f"Wall-time ratio ours / SB3, per seed: {', '.join(f'{r:.2f}' for r in ratios)}; mean {np.mean(ratios):.2f}.",
        "",
        "| library | seed | wall (s) | eval |",
        "|---|---|---|---|",
        *[f"| {r['lib']} | {r['seed']} | {r['wall_s']:.2f} | {r['eval_mean']:.1f} |" for r in rows],
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ppo_vs_sb3_cartpole.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
