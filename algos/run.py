"""The RL loop's run: everything an algorithm file needs before its loop (`start_run`: seeds, environments,
agent, rollout, run folder) and around each update (`Run.end_update`: checks, logging, checkpoints, stop
signals), and the final evaluation and summary (`Run.finish`)."""

from __future__ import annotations

import logging
import os
import platform
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import gymnasium as gym
import numpy as np
import torch

from algos import distributed
from algos.evaluation import evaluate_policy, record_video
from algos.group_rollout import GroupRollout
from algos.networks import make_agent
from algos.progress import Progress
from algos.rollout import KLController, Rollout
from algos.run_folder import RunFolder, StopSignal, check_checkpoint_fits
from algos.settings import Config
from core.agent import AgentContract
from core.checks import require
from core.devices import Placement
from core.errors import CheckpointError, NonFiniteError
from core.files import load_checkpoint
from core.info import KL_COEF_TAG, SAMPLES_TAG, VectorEnvSettings
from envs import make_vector_env, vector_env_settings

log = logging.getLogger("tokengym")
R = TypeVar("R", Rollout, GroupRollout)


def seed_everything(seed: int, torch_threads: int, device: torch.device) -> None:
    """Seed numpy and torch and pin the thread count, so that a CPU run repeats exactly. On a GPU, cuBLAS is put in
    its deterministic mode (CUDA's "results reproducibility" notes), and an op with no deterministic CUDA kernel
    warns instead of stopping the run."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(torch_threads)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.cuda.set_device(device)
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    torch.set_flush_denormal(True)  # tanh saturation makes denormal gradients, which are slow on x86


def seed_rank(seed: int) -> None:
    """Rank r > 0 of a data-parallel job samples its own actions: its torch stream is seeded by (seed, r) once the
    networks, identical on every rank, are built. Rank 0 keeps the seed's stream, as a plain run does."""
    if distributed.rank():
        torch.manual_seed(int(np.random.SeedSequence([seed, distributed.rank()]).generate_state(1)[0]))


@dataclass
class Segments:
    """How an algorithm consumes its rollouts: `num_steps` per environment per update, discounted by `gamma`,
    cut into `num_minibatches` minibatches of samples or of whole environments (`minibatch_by`)."""

    num_steps: int
    gamma: float
    num_minibatches: int = 1
    minibatch_by: str = "sample"


def envs_per_rank(env: VectorEnvSettings) -> int:
    """`env.num_envs` is the job's; each of the data-parallel ranks plays an equal share (all of them without
    torchrun)."""
    ranks = distributed.world_size()
    require(
        env.num_envs % ranks == 0,
        f"env.num_envs={env.num_envs} environments cannot be split evenly over {ranks} ranks (the global batch is "
        f"env.num_envs times the steps per environment); set env.num_envs to a multiple of {ranks}, e.g. "
        f"{ranks * max(1, env.num_envs // ranks)}",
    )
    return env.num_envs // ranks


def _envs_term() -> str:
    """How messages name the environments of one rank: env.num_envs itself, or its share per rank."""
    ranks = distributed.world_size()
    return "env.num_envs" if ranks == 1 else f"env.num_envs / {ranks} ranks"


def start_run(config: Config, algo: str, run_dir: Path, segments: Segments, kl_target: float | None) -> Run[Rollout]:
    """Seeds, environments, agent and rollout for `algo`; `kl_target` is the per-update KL bound the algorithm
    aims at (None: none), which the run's alarm watches. `Run.start` then resumes from the folder's checkpoint, if
    it holds one. Under torchrun, this rank's share of the environments (algos/distributed.py)."""
    env = vector_env_settings(config.env)
    num_envs, minibatches = envs_per_rank(env), segments.num_minibatches
    batch_size, share = num_envs * segments.num_steps, _envs_term()
    require(
        segments.minibatch_by == "sample" or num_envs % minibatches == 0,
        f"algo.minibatch_by=env splits {share}={num_envs} environments into "
        f"algo.num_minibatches={minibatches} equal groups; choose a divisor of {num_envs}",
    )
    require(
        batch_size % minibatches == 0,
        f"a batch of {share} * algo.num_steps = {num_envs} * {segments.num_steps} = {batch_size} "
        f"samples cannot be split into algo.num_minibatches={minibatches} equal minibatches; "
        f"choose a divisor of {batch_size}",
    )
    global_batch = batch_size * distributed.world_size()
    require(
        config.run.total_timesteps >= global_batch,
        f"total_timesteps={config.run.total_timesteps} is less than one batch ({global_batch} samples)",
    )
    envs, agent = _environments_and_agent(config, env, num_envs)
    rollout = Rollout(
        envs,
        agent,
        segments.num_steps,
        segments.gamma,
        config.run.seed + distributed.rank() * num_envs,  # this rank's environments' seeds in the job's sequence
        scale_rewards=env.normalize_reward,
        kl=_kl_controller(env),
        bootstrap_truncated=env.bootstraps_truncation(),
        device=config.placement.device,
    )
    return Run(
        config, algo, run_dir, agent, rollout, config.run.total_timesteps // global_batch, kl_target, global_batch
    )


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
    update (algos/group_rollout.py), each update's episodes cut into `num_minibatches` sets. Under torchrun a group
    never straddles two ranks: each rank plays whole groups."""
    env = vector_env_settings(config.env)
    num_envs, share, ranks = envs_per_rank(env), _envs_term(), distributed.world_size()
    require(
        num_envs % group_size == 0,
        f"{share}={num_envs} is not a multiple of algo.group_size={group_size}: the environments "
        f"form groups of {group_size}; set env.num_envs to a multiple of "
        f"{'it' if ranks == 1 else f'{group_size} x {ranks} ranks'}, e.g. "
        f"{group_size * ranks * max(1, num_envs // group_size)}",
    )
    require(
        num_envs % num_minibatches == 0,
        f"algo.num_minibatches={num_minibatches} must divide {share}={num_envs}, the episodes per update",
    )
    envs, agent = _environments_and_agent(config, env, num_envs)
    rollout = GroupRollout(
        envs,
        agent,
        group_size,
        max_episode_steps,
        config.run.seed,
        _kl_controller(env),
        env_name=f"env.id={env.id}",
        device=config.placement.device,
    )
    return Run(config, algo, run_dir, agent, rollout, None, kl_target, global_batch=env.num_envs)


def _environments_and_agent(
    config: Config, env: VectorEnvSettings, num_envs: int
) -> tuple[gym.vector.VectorEnv, AgentContract]:
    """Built on the CPU, so that a seed gives the same networks on every device, then placed on the run's."""
    seed_everything(config.run.seed, config.run.torch_threads, config.placement.device)
    with torch.device("cpu"):
        envs = make_vector_env(env, num_envs, training=True, placement=config.placement)
        agent = make_agent(envs.single_observation_space, envs.single_action_space, config.run.net, config.placement)
    seed_rank(config.run.seed)
    return envs, agent


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
        global_batch: int,
    ):
        super().__init__(config, algo, run_dir)
        self.rollout: R = rollout
        self.agent, self.num_updates, self.kl_target = agent, num_updates, kl_target
        self.global_batch = global_batch  # samples per update over all ranks (episodes, for the group algorithms)
        # at most about a thousand points per loss curve
        self.log_every = max(1, num_updates // 1000) if num_updates is not None else 1
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.next_update = 0
        settings = config.run
        self.display = Progress(
            run_dir.name, settings.total_timesteps, settings.progress and self.writes, settings.progress_interval_s
        )

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
        checkpoint = load_checkpoint(self.checkpoint_path)  # on the CPU; load_state_dict places each part
        check_checkpoint_fits(checkpoint, self.checkpoint_path, self.algo, self.config.env.id, self.agent)
        self._check_same_ranks(checkpoint["meta"].get("ranks", 1))
        self.agent.load_state_dict(checkpoint["agent"])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(checkpoint["optimizers"][name])
        own = checkpoint["ranks"][distributed.rank()] if "ranks" in checkpoint else _single_rank_state(checkpoint)
        self.rollout.load_state_dict(own["rollout"])
        self._set_rng_states(own["rng"])
        self.wall_before = checkpoint["meta"]["wall_clock_s"]
        next_update = checkpoint["meta"]["next_update"]
        log.info(
            "resuming %s from update %d (environment step %d)",
            self.checkpoint_path,
            next_update,
            self.rollout.global_step,
        )
        return next_update, checkpoint["algo_state"]

    def _check_same_ranks(self, saved: int) -> None:
        ranks = distributed.world_size()
        if saved != ranks:
            raise CheckpointError(
                f"{self.checkpoint_path} was written by a job of {saved} rank{'s' * (saved != 1)}, and this one has "
                f"{ranks}: each rank's environments are saved in it, so resume with the same number of ranks "
                f"({'torchrun --nproc_per_node=' + str(saved) if saved > 1 else 'without torchrun'})"
            )

    def _rng_states(self) -> dict:
        device = self.config.placement.device
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        }

    def _set_rng_states(self, states: dict) -> None:
        torch.set_rng_state(states["torch"])
        if states["cuda"] is not None:
            torch.cuda.set_rng_state(states["cuda"], self.config.placement.device)

    def save_checkpoint(self, next_update: int, algo_state: dict) -> None:
        """Parameters and optimiser state are the same on every rank; each rank's rollout (its environments, the
        episodes in progress) and random streams are gathered, so that the whole job resumes."""
        ranks = distributed.gather_to_main({"rollout": self.rollout.state_dict(), "rng": self._rng_states()})
        if self.writes:
            self.write_checkpoint(
                {"global_step": self.rollout.global_step, "next_update": next_update, "ranks": len(ranks)},
                {
                    "agent": self.agent.state_dict(),
                    "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
                    "algo_state": algo_state,
                    "ranks": ranks,
                },
            )
        distributed.barrier()  # no rank reads or replaces the checkpoint before it is whole

    def end_update(self, update: int, scalars: dict[str, float], algo_state: dict) -> None:
        self._check_finite(update, scalars)
        self._log(update, scalars)
        self.next_update = update + 1
        due, signal_number = distributed.agree_to_stop(self.checkpoint_due(), StopSignal.number())
        if due:
            self.save_checkpoint(self.next_update, algo_state)
        if signal_number:  # the agreed stop: a signal that came after the agreement waits for the next update's
            StopSignal.received = signal.Signals(signal_number).name
            self.stop_if_signalled("update", self.next_update, self.num_updates)

    def _check_finite(self, update: int, scalars: dict[str, float]) -> None:
        """Every rank stops if any rank's losses or parameters became non-finite (no rank waits for one gone)."""
        with distributed.stop_together(
            f"another rank's losses or parameters became non-finite at update {update}; the last good "
            f"checkpoint is kept at {self.checkpoint_path}"
        ):
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
        if not self.writes:  # curves are rank 0's environments' (x-axis: the job's steps)
            self.rollout.episode_metrics, self.rollout.samples = {}, []
            return
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
        """Final checkpoint, final evaluation (rank 0), summary.json; returns the summary (rank 0's, on every
        rank)."""
        wall, steps = self.wall_clock(), self.rollout.global_step
        self.save_checkpoint(self.next_update, algo_state)
        self.display.close()
        summary = self._evaluate_and_summarise(wall, steps) if self.writes else None
        return distributed.from_main(summary)

    def _evaluate_and_summarise(self, wall: float, steps: int) -> dict:
        settings, placement = self.config.run, self.config.placement
        returns = evaluate_policy(
            self.agent, self.config.env, settings.eval_episodes, settings.seed + 10_000, placement
        )
        self.writer.add_scalar("eval/mean_return", float(returns.mean()), steps)
        if settings.capture_video:
            videos = record_video(self.agent, self.config.env, self.dir / "videos", settings.seed + 10_000, placement)
            log.info("evaluation video: %s", ", ".join(map(str, videos)))
        summary = self.write_summary(
            {
                "total_env_steps": steps,
                "wall_clock_s": round(wall, 3),
                "steps_per_second": round(steps / wall, 1) if wall > 0 else None,
                "device": device_summary(placement),
                "distributed": {
                    "ranks": distributed.world_size(),
                    "backend": distributed.backend(),
                    "global_batch": self.global_batch,
                    "per_rank_batch": self.global_batch // distributed.world_size(),
                },
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


def _single_rank_state(checkpoint: dict) -> dict:
    """The rollout and random state of a checkpoint written before checkpoints held one per rank."""
    return {"rollout": checkpoint["rollout"], "rng": {"torch": checkpoint["torch_rng"], "cuda": None}}


def device_summary(placement: Placement) -> dict:
    """What summary.json says of the device: its kind, its name (the GPU's model), the precision."""
    device = placement.device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.machine()} ({torch.backends.cpu.get_cpu_capability()} kernels)"
    return {"device": str(device), "name": name, "precision": placement.precision}
