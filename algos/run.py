"""The RL loop's run: everything an algorithm file needs before its loop (`start_run`: seeds, environments,
agent, rollout, run folder) and around each update (`Run.end_update`: checks, logging, checkpoints, stop
signals), and the final evaluation and summary (`Run.finish`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import gymnasium as gym
import numpy as np
import torch

from algos.evaluation import evaluate_policy, record_video
from algos.group_rollout import GroupRollout
from algos.networks import make_agent
from algos.progress import Progress
from algos.rollout import KLController, Rollout
from algos.run_folder import RunFolder, check_checkpoint_fits
from algos.settings import Config
from core.agent import AgentContract
from core.checks import require
from core.errors import NonFiniteError
from core.files import load_checkpoint
from core.info import KL_COEF_TAG, SAMPLES_TAG, VectorEnvSettings
from envs import make_vector_env, vector_env_settings

log = logging.getLogger("tokengym")
R = TypeVar("R", Rollout, GroupRollout)


def seed_everything(seed: int, torch_threads: int) -> None:
    """Seed numpy and torch and pin the thread count, so that a CPU run repeats exactly."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(torch_threads)
    torch.use_deterministic_algorithms(True)
    torch.set_flush_denormal(True)  # tanh saturation makes denormal gradients, which are slow on x86


@dataclass
class Segments:
    """How an algorithm consumes its rollouts: `num_steps` per environment per update, discounted by `gamma`,
    cut into `num_minibatches` minibatches of samples or of whole environments (`minibatch_by`)."""

    num_steps: int
    gamma: float
    num_minibatches: int = 1
    minibatch_by: str = "sample"


def start_run(config: Config, algo: str, run_dir: Path, segments: Segments, kl_target: float | None) -> Run[Rollout]:
    """Seeds, environments, agent and rollout for `algo`; `kl_target` is the per-update KL bound the algorithm
    aims at (None: none), which the run's alarm watches. `Run.start` then resumes from the folder's checkpoint, if
    it holds one."""
    env = vector_env_settings(config.env)
    num_envs, minibatches = env.num_envs, segments.num_minibatches
    batch_size = num_envs * segments.num_steps
    require(
        segments.minibatch_by == "sample" or num_envs % minibatches == 0,
        f"algo.minibatch_by=env splits env.num_envs={num_envs} environments into "
        f"algo.num_minibatches={minibatches} equal groups; choose a divisor of {num_envs}",
    )
    require(
        batch_size % minibatches == 0,
        f"a batch of env.num_envs * algo.num_steps = {num_envs} * {segments.num_steps} = {batch_size} "
        f"samples cannot be split into algo.num_minibatches={minibatches} equal minibatches; "
        f"choose a divisor of {batch_size}",
    )
    require(
        config.run.total_timesteps >= batch_size,
        f"total_timesteps={config.run.total_timesteps} is less than one batch ({batch_size} samples)",
    )
    envs, agent = _environments_and_agent(config, env)
    rollout = Rollout(
        envs,
        agent,
        segments.num_steps,
        segments.gamma,
        config.run.seed,
        scale_rewards=env.normalize_reward,
        kl=_kl_controller(env),
        bootstrap_truncated=env.bootstraps_truncation(),
    )
    return Run(config, algo, run_dir, agent, rollout, config.run.total_timesteps // batch_size, kl_target)


def start_group_run(
    config: Config,
    algo: str,
    run_dir: Path,
    group_size: int,
    max_episode_steps: int,
    num_minibatches: int,
    kl_target: float | None,
) -> Run[GroupRollout]:
    """As `start_run`, for the group-relative algorithms: `env.num_envs / group_size` groups of whole episodes per
    update (algos/group_rollout.py), each update's episodes cut into `num_minibatches` sets."""
    env = vector_env_settings(config.env)
    require(
        env.num_envs % group_size == 0,
        f"env.num_envs={env.num_envs} is not a multiple of algo.group_size={group_size}: the environments form "
        f"groups of {group_size}; set env.num_envs to a multiple of it, e.g. "
        f"{group_size * max(1, env.num_envs // group_size)}",
    )
    require(
        env.num_envs % num_minibatches == 0,
        f"algo.num_minibatches={num_minibatches} must divide env.num_envs={env.num_envs}, the episodes per update",
    )
    envs, agent = _environments_and_agent(config, env)
    rollout = GroupRollout(
        envs, agent, group_size, max_episode_steps, config.run.seed, _kl_controller(env), env_name=f"env.id={env.id}"
    )
    return Run(config, algo, run_dir, agent, rollout, None, kl_target)


def _environments_and_agent(config: Config, env: VectorEnvSettings) -> tuple[gym.vector.VectorEnv, AgentContract]:
    seed_everything(config.run.seed, config.run.torch_threads)
    envs = make_vector_env(env, env.num_envs, training=True)
    return envs, make_agent(envs.single_observation_space, envs.single_action_space, config.run.net)


def _kl_controller(env: VectorEnvSettings) -> KLController | None:
    penalty = env.kl_penalty()
    return KLController(penalty) if penalty else None


class Run(RunFolder, Generic[R]):
    """`start` resumes from the folder's checkpoint when there is one; `end_update` is called once per update;
    `finish` writes the final checkpoint, evaluates the policy and writes the summary."""

    def __init__(
        self,
        config: Config,
        algo: str,
        run_dir: Path,
        agent: AgentContract,
        rollout: R,
        num_updates: int | None,
        kl_target: float | None,
    ):
        super().__init__(config, algo, run_dir)
        self.rollout: R = rollout
        self.agent, self.num_updates, self.kl_target = agent, num_updates, kl_target
        # at most about a thousand points per loss curve
        self.log_every = max(1, num_updates // 1000) if num_updates is not None else 1
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.next_update = 0
        settings = config.run
        self.display = Progress(run_dir.name, settings.total_timesteps, settings.progress, settings.progress_interval_s)

    def start(self, optimizers: dict[str, torch.optim.Optimizer], algo_state: dict) -> dict:
        """Returns the algorithm's state, from the checkpoint when resuming (and the updates continue there)."""
        self.optimizers, first_update = optimizers, 0
        if self.checkpoint_path.exists():
            first_update, algo_state = self._restore()
        self.open(purge_step=self.rollout.global_step + 1 if first_update else None)
        self.start_step, self.next_update = self.rollout.global_step, first_update
        self.display.begin(self.start_step)
        return algo_state

    def updates(self) -> Iterator[int]:
        """The updates left to run (call after `start`): up to `num_updates`, or, where batches vary in length (the
        group algorithms' whole episodes), until the rollouts have taken `total_timesteps` environment steps."""
        while not self._budget_spent():
            yield self.next_update

    def progress(self) -> float:
        """The fraction of the training budget spent, for schedules (a learning rate annealed to 0)."""
        if self.num_updates is not None:
            return self.next_update / self.num_updates
        return min(1.0, self.rollout.global_step / self.config.run.total_timesteps)

    def _budget_spent(self) -> bool:
        if self.num_updates is not None:
            return self.next_update >= self.num_updates
        return self.rollout.global_step >= self.config.run.total_timesteps

    def _restore(self) -> tuple[int, dict]:
        checkpoint = load_checkpoint(self.checkpoint_path)
        check_checkpoint_fits(checkpoint, self.checkpoint_path, self.algo, self.config.env.id, self.agent)
        self.agent.load_state_dict(checkpoint["agent"])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(checkpoint["optimizers"][name])
        self.rollout.load_state_dict(checkpoint["rollout"])
        torch.set_rng_state(checkpoint["torch_rng"])
        self.wall_before = checkpoint["meta"]["wall_clock_s"]
        next_update = checkpoint["meta"]["next_update"]
        log.info(
            "resuming %s from update %d (environment step %d)",
            self.checkpoint_path,
            next_update,
            self.rollout.global_step,
        )
        return next_update, checkpoint["algo_state"]

    def save_checkpoint(self, next_update: int, algo_state: dict) -> None:
        self.write_checkpoint(
            {"global_step": self.rollout.global_step, "next_update": next_update},
            {
                "agent": self.agent.state_dict(),
                "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
                "algo_state": algo_state,
                "rollout": self.rollout.state_dict(),
                "torch_rng": torch.get_rng_state(),
            },
        )

    def end_update(self, update: int, scalars: dict[str, float], algo_state: dict) -> None:
        self._check_finite(update, scalars)
        self._log(update, scalars)
        self.next_update = update + 1
        if self.checkpoint_due():
            self.save_checkpoint(self.next_update, algo_state)
        self.stop_if_signalled("update", self.next_update, self.num_updates)

    def _check_finite(self, update: int, scalars: dict[str, float]) -> None:
        self.check_finite(f"update {update}", scalars)
        if not all(torch.isfinite(p).all() for p in self.agent.parameters()):
            raise NonFiniteError(
                f"the agent's parameters became non-finite at update {update} (a non-finite "
                f"gradient); the last good checkpoint is kept at {self.checkpoint_path}"
            )
        kl, alarm = scalars.get("losses/approx_kl"), self.config.run.kl_alarm
        if kl is not None and self.kl_target is not None and kl > alarm * self.kl_target:
            log.warning(
                "KL DIVERGING: KL(pi_old || pi) = %.4g at update %d is %.0fx the target %.4g "
                "(kl_alarm=%g); consider a smaller learning rate",
                kl,
                update,
                kl / self.kl_target,
                self.kl_target,
                alarm,
            )

    def _log(self, update: int, scalars: dict[str, float]) -> None:
        """New finished episodes always; losses every `log_every` updates. x-axis = environment steps."""
        episodes, self.rollout.finished_episodes = self.rollout.finished_episodes, []
        self.display.update(self.rollout.global_step, [ret for _, ret, _ in episodes])
        for step, ret, length in episodes:
            self.writer.add_scalar("charts/episodic_return", ret, step)
            self.writer.add_scalar("charts/episodic_length", length, step)
        if update % self.log_every == 0 or self._budget_spent():
            step = self.rollout.global_step
            sps = (step - self.start_step) / (time.perf_counter() - self.start_time)
            metrics = {tag: float(np.mean(v)) for tag, v in self.rollout.episode_metrics.items() if v}
            if self.rollout.kl is not None:
                metrics[KL_COEF_TAG] = self.rollout.kl.beta
            for tag, value in {**scalars, **metrics, "charts/SPS": sps}.items():
                self.writer.add_scalar(tag, value, step)
            self.rollout.episode_metrics = {}
            if self.rollout.samples:
                self.writer.add_text(SAMPLES_TAG, "\n".join(f"- `{s}`" for s in self.rollout.samples), step)

    def finish(self, algo_state: dict) -> dict:
        """Final checkpoint, final evaluation, summary.json; returns the summary."""
        wall, steps, settings = self.wall_clock(), self.rollout.global_step, self.config.run
        self.save_checkpoint(self.next_update, algo_state)
        self.display.close()
        returns = evaluate_policy(self.agent, self.config.env, settings.eval_episodes, settings.seed + 10_000)
        self.writer.add_scalar("eval/mean_return", float(returns.mean()), steps)
        if settings.capture_video:
            videos = record_video(self.agent, self.config.env, self.dir / "videos", settings.seed + 10_000)
            log.info("evaluation video: %s", ", ".join(map(str, videos)))
        summary = self.write_summary(
            {
                "total_env_steps": steps,
                "wall_clock_s": round(wall, 3),
                "steps_per_second": round(steps / wall, 1) if wall > 0 else None,
                "eval": {
                    "mean": float(returns.mean()),
                    "std": float(returns.std()),
                    "episodes": len(returns),
                    "policy": "deterministic (argmax / Gaussian mean)",
                    "returns": returns.tolist(),
                },
            }
        )
        log.info(
            "eval return %.1f +- %.1f over %d episodes; run folder: %s",
            returns.mean(),
            returns.std(),
            len(returns),
            self.dir,
        )
        return summary
