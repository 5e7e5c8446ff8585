"""Stable-Baselines3 (A2C, PPO) and sb3-contrib (TRPO) runs with our settings, in our run-folder format.

    python -m benchmarks.sb3_peers -m algo=a2c,trpo,ppo_clip env=cartpole,acrobot seed=0,1,2 hydra/launcher=joblib
    python -m benchmarks.sb3_peers -m algo=ppo_clip env=breakout seed=1,2 total_timesteps=1000000   # Atari

The Hydra config is the one `python -m algos` composes (conf/: algorithm defaults, environment, tuned sets,
budget, seed), translated into the peer's constructor arguments by `peer_kwargs`, so a run of ours and its peer
share every setting both libraries have: envs x steps, minibatches, epochs, gamma, lambda, learning rate and its
linear annealing, clip range, loss coefficients, grad-norm clip, optimizer and its eps, networks (separate
actor and critic MLPs of net.hidden_sizes, orthogonal init; on Atari SB3's own Nature CNN and its AtariWrapper
set from env.*: no-ops, frame skip, episodic life, fire on reset, 84x84, reward sign, frame stack). A setting the
peer cannot match stops the run with a message. Known remaining differences: SB3's PPO stops an update early at
1.5 x target_kl (ours at target_kl; both off by default); the critic of SB3's TRPO shares the policy's optimizer
class; SB3's PPO clips the value prediction (clip_range_vf) where ours, as CleanRL, takes the larger of the clipped
and unclipped value losses; SB3's value loss is vf_coef * MSE where ours, as CleanRL, is vf_coef * 0.5 * MSE (with
separate actor and critic networks and Adam this scale matters only through the joint gradient-norm clip).
Observation and reward normalisation (MuJoCo's presets) is SB3's VecNormalize, which updates its statistics every
step; ours updates the agent's at each rollout's start, from the previous rollout's observations.

A run folder gets config.yaml (ours, plus the peer's class and arguments under `peer`), TensorBoard events with
our tag names (charts/episodic_return and charts/episodic_length per finished episode, charts/SPS per rollout,
eval/mean_return at the end; x = environment steps) and summary.json with our keys. Evaluation is ours:
`eval_episodes` episodes with the deterministic policy on environments seeded seed + 10000 + i. Wall time covers
`learn()` (after the envs and networks are built, before evaluation), as ours covers its training loop.
"""

from __future__ import annotations

import json
import platform
import time
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, cast

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from algos.cli import CONF_DIR

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

PEERS = {
    "a2c": ("sb3_a2c", "stable-baselines3", "A2C"),
    "ppo_clip": ("sb3_ppo", "stable-baselines3", "PPO"),
    "trpo": ("sb3_trpo", "sb3-contrib", "TRPO"),
}


class PeerError(ValueError):
    """A setting the peer library cannot reproduce."""


def check_matchable(cfg: DictConfig) -> None:
    if cfg.env.kind not in ("classic", "atari"):
        raise PeerError(f"env.kind={cfg.env.kind}: peers are run on classic-control and Atari environments only")
    if cfg.env.kind == "atari":  # the CNN is the Nature CNN on both sides, and rewards are clipped, not normalised
        if cfg.env.episodic_life and not cfg.env.fire_on_life_loss:
            raise PeerError("SB3's AtariWrapper presses FIRE after every lost life; set env.fire_on_life_loss=true")
        return
    if cfg.net.activation not in ("tanh", "relu"):
        raise PeerError(f"net.activation={cfg.net.activation} has no SB3 translation")


def schedule(value: float, anneal: bool):
    from stable_baselines3.common.utils import LinearSchedule

    return LinearSchedule(value, 0.0, 1.0) if anneal else value


def peer_kwargs(cfg: DictConfig) -> dict:
    """The peer's constructor arguments for our config (the SB3 name of each of our hyperparameters)."""
    hp, batch = cfg.algo, cfg.env.num_envs * cfg.algo.num_steps
    policy_kwargs = (
        {}
        if cfg.env.kind == "atari"
        else {
            "net_arch": {"pi": list(cfg.net.hidden_sizes), "vf": list(cfg.net.hidden_sizes)},
            "activation_fn": {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[cfg.net.activation],
        }
    )
    common = {"n_steps": hp.num_steps, "gamma": hp.gamma, "policy_kwargs": policy_kwargs}
    if hp.name == "ppo_clip":
        policy_kwargs["optimizer_kwargs"] = {"eps": hp.adam_eps}
        return {
            **common,
            "learning_rate": schedule(hp.learning_rate, hp.anneal_lr),
            "batch_size": batch // hp.num_minibatches,
            "n_epochs": hp.update_epochs,
            "gae_lambda": hp.gae_lambda,
            "clip_range": schedule(hp.clip_coef, hp.anneal_clip),
            "clip_range_vf": schedule(hp.clip_coef, hp.anneal_clip) if hp.clip_vloss else None,
            "normalize_advantage": hp.norm_adv,
            "ent_coef": hp.ent_coef,
            "vf_coef": hp.vf_coef,
            "max_grad_norm": hp.max_grad_norm,
            "target_kl": hp.target_kl,
        }
    if hp.name == "a2c":
        policy_kwargs.update(
            optimizer_class=torch.optim.RMSprop,
            optimizer_kwargs={"alpha": hp.rms_alpha, "eps": hp.rms_eps, "weight_decay": 0},
        )
        return {
            **common,
            "learning_rate": schedule(hp.learning_rate, hp.anneal_lr),
            "gae_lambda": hp.gae_lambda,
            "normalize_advantage": hp.norm_adv,
            "ent_coef": hp.ent_coef,
            "vf_coef": hp.vf_coef,
            "max_grad_norm": hp.max_grad_norm,
        }
    policy_kwargs["optimizer_kwargs"] = {"eps": 1e-8}  # our TRPO critic: torch's default Adam
    return {
        **common,
        "learning_rate": hp.value_learning_rate,
        "batch_size": batch // hp.num_minibatches,
        "n_critic_updates": hp.value_epochs,
        "gae_lambda": hp.gae_lambda,
        "target_kl": hp.max_kl,
        "cg_max_steps": hp.cg_iters,
        "cg_damping": hp.cg_damping,
        "line_search_shrinking_factor": hp.backtrack_coef,
        "line_search_max_iter": hp.backtrack_iters,
        "normalize_advantage": hp.norm_adv,
    }


def make_peer(cfg: DictConfig, envs):
    Peer: type[BaseAlgorithm]
    if cfg.algo.name == "trpo":
        from sb3_contrib import TRPO as Peer
    else:
        import stable_baselines3

        Peer = getattr(stable_baselines3, PEERS[cfg.algo.name][2])
    policy = "CnnPolicy" if cfg.env.kind == "atari" else "MlpPolicy"
    return Peer(policy, envs, seed=cfg.seed, device="cpu", verbose=0, **peer_kwargs(cfg))


def make_peer_envs(cfg: DictConfig, n_envs: int, seed: int):
    """SB3's vectorised environments for our config; each has a Monitor under any wrapper that changes
    rewards, observations or episodes, so logged and evaluated returns are raw whole episodes (whole games on
    Atari)."""
    from stable_baselines3.common.env_util import make_atari_env, make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    env_cfg = cfg.env
    if env_cfg.kind != "atari":
        return normalised(cfg, make_vec_env(env_cfg.id, n_envs=n_envs, seed=seed))
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    envs = make_atari_env(
        env_cfg.id,
        n_envs=n_envs,
        seed=seed,
        env_kwargs={
            "frameskip": 1,
            "repeat_action_probability": env_cfg.repeat_action_probability,
            "max_num_frames_per_episode": env_cfg.max_episode_frames,
        },
        wrapper_kwargs={
            "noop_max": env_cfg.noop_max,
            "frame_skip": env_cfg.frame_skip,
            "screen_size": env_cfg.screen_size,
            "terminal_on_life_loss": env_cfg.episodic_life,
            "clip_reward": env_cfg.clip_rewards,
        },
    )
    return VecFrameStack(envs, n_stack=env_cfg.frame_stack)


def normalised(cfg: DictConfig, envs):
    """net.normalize_obs and env.normalize_reward as SB3's VecNormalize: observations standardised by running
    moments and clipped to +-10 (ours: algos/networks.py RunningMeanStd), rewards divided by the running std of
    the discounted return and not clipped (ours: algos/rollout.py RewardScaler)."""
    from stable_baselines3.common.vec_env import VecNormalize

    if not (cfg.net.normalize_obs or cfg.env.normalize_reward):
        return envs
    return VecNormalize(
        envs,
        norm_obs=cfg.net.normalize_obs,
        norm_reward=cfg.env.normalize_reward,
        clip_obs=10.0,
        clip_reward=np.inf,
        gamma=cfg.algo.gamma,
        epsilon=1e-8,
    )


def frozen_normalisation(model: BaseAlgorithm, eval_envs):
    """The evaluation envs normalise observations with the trained statistics, never updating them, and
    report raw rewards."""
    from stable_baselines3.common.vec_env import VecNormalize

    trained = model.get_vec_normalize_env()
    if trained is None:
        return eval_envs
    assert isinstance(eval_envs, VecNormalize)
    eval_envs.obs_rms, eval_envs.training, eval_envs.norm_reward = trained.obs_rms, False, False
    return eval_envs


def episode_logger(writer):
    """An SB3 callback writing our tags: each finished episode's raw return and length (from the Monitor
    wrapper) at the environment step it ended, and SPS after each rollout."""
    from stable_baselines3.common.callbacks import BaseCallback

    class EpisodeLogger(BaseCallback):
        def _on_training_start(self) -> None:
            self.start = time.perf_counter()

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    writer.add_scalar("charts/episodic_return", info["episode"]["r"], self.num_timesteps)
                    writer.add_scalar("charts/episodic_length", info["episode"]["l"], self.num_timesteps)
            return True

        def _on_rollout_end(self) -> None:
            sps = self.num_timesteps / (time.perf_counter() - self.start)
            writer.add_scalar("charts/SPS", sps, self.num_timesteps)

    return EpisodeLogger()


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        **{name: version(name) for name in ("torch", "gymnasium", "stable-baselines3", "sb3-contrib", "numpy")},
    }


def train_peer(cfg: DictConfig, run_dir: Path) -> dict:
    """Train the peer of `cfg.algo` in `run_dir`; returns (and writes) the summary."""
    from stable_baselines3.common.evaluation import evaluate_policy
    from torch.utils.tensorboard import SummaryWriter

    if cfg.algo.name not in PEERS:
        raise PeerError(f"no SB3 peer for algo={cfg.algo.name}; peers exist for: {', '.join(PEERS)}")
    name, library, class_name = PEERS[cfg.algo.name]
    peer = {
        "name": name,
        "library": f"{library} {version(library)}",
        "class": class_name,
        "kwargs": {k: repr(v) for k, v in peer_kwargs(cfg).items()},
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    # Written first, so that a run failing from here on is reported under the peer's name.
    config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(config, dict)  # a DictConfig becomes a dict
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml({**config, "peer": peer}))
    check_matchable(cfg)
    torch.set_num_threads(cfg.torch_threads)
    batch = cfg.env.num_envs * cfg.algo.num_steps
    steps = cfg.total_timesteps // batch * batch  # whole rollouts, as ours runs
    model = make_peer(cfg, make_peer_envs(cfg, cfg.env.num_envs, cfg.seed))
    writer = SummaryWriter(str(run_dir))

    start = time.perf_counter()
    model.learn(total_timesteps=steps, callback=episode_logger(writer))
    wall = time.perf_counter() - start

    eval_envs = frozen_normalisation(model, make_peer_envs(cfg, cfg.eval_episodes, cfg.seed + 10_000))
    # SB3 annotates both return shapes as one union; with return_episode_rewards it is (returns, lengths)
    episode_returns, _ = cast(
        tuple[list[float], list[int]],
        evaluate_policy(
            model, eval_envs, n_eval_episodes=cfg.eval_episodes, deterministic=True, return_episode_rewards=True
        ),
    )
    returns = np.asarray(episode_returns, dtype=float)
    summary = {
        "algo": name,
        "env": cfg.env.id,
        "seed": cfg.seed,
        "total_env_steps": int(model.num_timesteps),
        "wall_clock_s": round(wall, 3),
        "steps_per_second": round(model.num_timesteps / wall, 1),
        "eval": {
            "mean": float(returns.mean()),
            "std": float(returns.std()),
            "episodes": len(returns),
            "policy": "deterministic (argmax / Gaussian mean)",
            "returns": returns.tolist(),
        },
        "peer": peer,
        "versions": versions(),
    }
    writer.add_scalar("eval/mean_return", summary["eval"]["mean"], model.num_timesteps)
    writer.close()
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="sb3_peers")
def run_peer(cfg: DictConfig) -> float:
    summary = train_peer(cfg, Path(HydraConfig.get().runtime.output_dir))
    print(f"run folder: {HydraConfig.get().runtime.output_dir} (eval return {summary['eval']['mean']:.1f})")
    return summary["eval"]["mean"]


if __name__ == "__main__":
    run_peer()
