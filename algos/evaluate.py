"""Evaluate or watch a saved agent: `python -m algos.evaluate <run folder> [episodes=100] [deterministic=true|false]
[capture_video=true] [seed=...]`, for every env kind.

The run folder's own config.yaml rebuilds the environment and the network; the checkpoint is loaded with torch's
weights-only loader and checked against them (algorithm, env, shapes), and the observation normaliser's statistics
come with the agent's weights (they are buffers of the agent, so no evaluation runs on raw observations by mistake:
CleanRL #400). Writes `<run folder>/eval-<time>.json` (mean, sd, every episode's return and length) and, with
capture_video=true, one recorded episode under `<run folder>/videos-eval-<time>/`; prints a one-line summary.
A text run is evaluated by the text evaluator (envs/text/evaluate.py: proxy and gold reward, KL to the reference,
best-of-N beside it), with `episodes` as the number of prompts.

In Python, `load_policy(run_folder)` gives a callable for a plain Gymnasium loop:

    policy = load_policy("results/runs/ppo_clip-cartpole-seed1-...")
    env = gymnasium.make("CartPole-v1")
    obs, _ = env.reset(seed=0)
    while True:
        obs, reward, terminated, truncated, _ = env.step(policy(obs))
        if terminated or truncated:
            break
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from algos.evaluation import play, record_video
from algos.networks import make_agent
from algos.registry import ALGORITHMS, hyperparameters
from algos.run_folder import check_checkpoint_fits
from algos.settings import Config, check_config
from core.agent import AgentContract
from core.checks import check_settings
from core.errors import ConfigError
from core.files import atomic_write, load_checkpoint
from envs import check_video_support, make_vector_env, vector_env_settings

EXIT_BAD_INPUT = 2


@dataclass
class EvalSettings:
    episodes: int = 100
    deterministic: bool = True  # the mode of the policy (argmax, Gaussian mean); false: sampled actions
    capture_video: bool = False
    seed: int = 20_000  # evaluation environments' seed, apart from training's (seed) and its final evaluation's


def run_config(run_dir: Path) -> Config:
    """The run's config.yaml, checked as the run checked it; evaluation runs on the CPU, wherever the run trained."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(
            f"{run_dir} has no config.yaml; give the folder of a run (it holds config.yaml and checkpoint.pt)"
        )
    cfg = OmegaConf.load(path)
    assert isinstance(cfg, DictConfig)
    name = cfg.algo.get("name")
    if name == "seqgan" or name not in ALGORITHMS:
        raise ConfigError(
            f"{run_dir} is a run of algo={name}, which has no policy to play; its summary.json holds its evaluation"
        )
    cfg.device, cfg.precision = "cpu", "fp32"
    return check_config(cfg, hyperparameters(name))


def load_agent(run_dir: Path, config: Config, num_envs: int = 1) -> AgentContract:
    """The run's agent with its checkpoint's weights (and observation statistics), for `num_envs` environments."""
    path = run_dir / "checkpoint.pt"
    if not path.is_file():
        raise ConfigError(
            f"{run_dir} has no checkpoint.pt: the run has not saved one yet (it writes one every "
            f"checkpoint_interval_s seconds and at its end); give a run folder that holds one"
        )
    envs = make_vector_env(config.env, num_envs, training=False)
    agent = make_agent(envs.single_observation_space, envs.single_action_space, config.run.net)
    envs.close()
    checkpoint = load_checkpoint(path)
    check_checkpoint_fits(checkpoint, path, config.raw.algo.name, config.env.id, agent)
    agent.load_state_dict(checkpoint["agent"])
    return agent


class Policy:
    """A saved agent as a function of one observation, for a plain Gymnasium loop."""

    def __init__(self, agent: AgentContract, deterministic: bool = True):
        self.agent, self.deterministic = agent, deterministic

    @torch.no_grad()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        batch = torch.as_tensor(np.asarray(obs))[None]
        action = self.agent.greedy_action(batch) if self.deterministic else self.agent.act(batch)[0]
        return action[0].numpy()


def load_policy(run_dir: str | Path, deterministic: bool = True) -> Policy:
    run_dir = Path(run_dir)
    return Policy(load_agent(run_dir, run_config(run_dir)), deterministic)


def evaluate(run_dir: Path, settings: EvalSettings) -> dict:
    """Play `settings.episodes` episodes (one per environment, seeded from settings.seed) and write eval-<time>.json."""
    config = run_config(run_dir)
    if settings.capture_video:
        check_video_support(config.env)
    env = vector_env_settings(config.env)
    agent = load_agent(run_dir, config)
    torch.manual_seed(settings.seed)
    episodes = play(
        agent, make_vector_env(env, settings.episodes, training=False), settings.seed, settings.deterministic
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    result = {
        "run": str(run_dir),
        "algo": config.raw.algo.name,
        "env": env.id,
        "seed": settings.seed,
        "policy": "deterministic (mode)" if settings.deterministic else "stochastic (sampled)",
        "episodes": settings.episodes,
        "mean": float(episodes.returns.mean()),
        "std": float(episodes.returns.std()),
        "returns": episodes.returns.tolist(),
        "lengths": episodes.lengths.tolist(),
    }
    if settings.capture_video:
        folder = run_dir / f"videos-eval-{stamp}"
        result["videos"] = [
            str(p) for p in record_video(agent, env, folder, settings.seed, deterministic=settings.deterministic)
        ]
    text = json.dumps(result, indent=2).encode()
    atomic_write(run_dir / f"eval-{stamp}.json", lambda f: f.write(text))
    return result


def parse_settings(args: list[str]) -> EvalSettings:
    """key=value arguments into EvalSettings, with the valid keys named on a bad one."""
    values: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"{arg!r} is not key=value; valid keys: episodes, deterministic, capture_video, seed")
        values[key] = value
    settings = check_settings(EvalSettings, OmegaConf.from_dotlist([f"{k}={v}" for k, v in values.items()]), "")
    if settings.episodes <= 0:
        raise ConfigError(f"episodes={settings.episodes} must be > 0")
    return settings


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else EXIT_BAD_INPUT
    run_dir = Path(argv[0])
    try:
        settings = parse_settings(argv[1:])
        config = run_config(run_dir)
        if settings.capture_video:
            check_video_support(config.env)
        if config.env.kind == "text":
            from envs.text.evaluate import evaluate_run

            print(evaluate_run(run_dir, settings.episodes, [1, 4, 16], settings.seed))
            return 0
        result = evaluate(run_dir, settings)
    except ConfigError as err:
        print(f"tokengym: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(
        f"{result['algo']} on {result['env']}: return {result['mean']:.4g} +- {result['std']:.3g} over "
        f"{result['episodes']} episodes ({result['policy']}); written to {run_dir}/eval-*.json"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
