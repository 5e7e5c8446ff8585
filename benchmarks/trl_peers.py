"""TRL's GRPOTrainer and RLOOTrainer (TRL 1.16) on our text tasks, with our settings, in our run-folder format.

    python -m benchmarks.trl_peers algo=grpo env=text_sentiment seed=1
    python -m benchmarks.trl_peers algo=rloo env=text_sentiment env.kl_target=null env.kl_coef=0.05 seed=1
    python -m benchmarks.trl_peers -m algo=grpo,rloo env=text_sentiment seed=1,2,3   # a Hydra sweep, as ours
    python -m benchmarks.trl_peers --speed algo=grpo env=text_sentiment total_timesteps=12000   # ours, then TRL

The Hydra config is the one `python -m algos` composes (conf/: algorithm defaults, environment, tuned sets,
budget, seed), translated into TRL's config by `trainer_args`, so a run of ours and its peer share every setting
both have. The task is ours (envs/text/tasks.py, `load_task`): its base LM folder is the policy (loaded by
envs/text/loading.py, fp32, CPU), the reference is the policy's initial weights (TRL reloads them from the same
folder), its prompts are the dataset, and its reward (`TextTask.score`, e.g. the learned reward model) is TRL's
reward function, called on the same (prompt, completion) strings as our env scores. Nothing is downloaded:
Hugging Face hub access is switched off while a peer is built and trained (HF_HUB_OFFLINE, telemetry off).

What is the same, setting by setting
- Prompts: TRL tokenizes each prompt with the tokenizer's own call; the policy's tokenizer is set up so that this
  gives exactly our env's ids (`<bos>` + prompt, no `<eos>`; envs/text/tokens.py), checked on every prompt.
- Sampling: temperature 1, no top-k or top-p; a completion ends at EOS or after env.max_new_tokens
  (TRL's max_completion_length); the reward is scored on the decoded completion without its EOS, as ours.
- Groups: algo.group_size -> num_generations; env.num_envs completions per batch (generation_batch_size), so
  env.num_envs / group_size prompts per batch.
- Updates: algo.num_minibatches -> steps_per_generation (per_device_train_batch_size = env.num_envs /
  num_minibatches, no gradient accumulation), algo.update_epochs -> num_iterations; algo.clip_coef -> epsilon;
  algo.max_grad_norm -> max_grad_norm; one optimizer step per minibatch, as ours.
- Optimizer: ours, passed to the trainer (`optimizers=`): Adam, lr algo.learning_rate, eps algo.adam_eps, no
  weight decay; with algo.anneal_lr, lr x (1 - generated tokens / total_timesteps), set at each batch's start
  from the tokens generated before it, as ours.
- GRPO: algo.kl_coef -> beta, the k3 estimator per token in the loss (use_bias_correction_kl=false: no
  importance-ratio weight on it, as eq. 3); algo.scale_rewards -> scale_rewards group/none;
  algo.loss_aggregation sequence/token/constant -> loss_type grpo/bnpo/dr_grpo; algo.ent_coef -> entropy_coef.
- RLOO: env.kl_coef -> beta, the per-sequence penalty beta * sum_t (log pi - log pi_ref) in the reward (k1, the
  sampling policy's log-probabilities); algo.normalize_advantages -> normalize_advantages. With env.kl_target
  (the default task's adaptive coefficient), our controller (algos/rollout.py, KLController: Ziegler et al.
  2019) moves TRL's beta after each batch from that batch's mean per-sequence KL and token count, as ours moves
  its own; TRL itself has only a fixed beta, so this one piece of the peer is ours (a callback sets
  RLOOTrainer.beta, which TRL reads at each batch's scoring). env.kl_target=null keeps TRL's own fixed beta.
- Budget: total_timesteps counts generated tokens in our runs (each completion's tokens, its EOS included).
  TRL counts optimizer steps, so the peer's reward function counts the tokens it scores and training stops at the
  end of the first batch that reaches total_timesteps, as ours stops; max_steps is only an upper bound (every
  completion one token long). The number of batches is therefore not fixed in advance on either side.

Where TRL cannot match ours (the list in docs/sweeps.md)
- RLOO's clipping: TRL 1.16 clips the sequence's ratio exp(sum_t log r_t) (its per-sequence loss
  -min(r A, clip(r) A)), as ours does with algo.clip_level=sequence; ours with the default clip_level=token clips
  each token's ratio and sums the clipped terms. With algo.clip_coef=null (one on-policy step per batch) all
  three give the same gradient.
- RLOO's advantage normalisation: TRL subtracts the batch mean and divides by std + 1e-4, ours divides by
  std + 1e-8 (leave-one-out advantages have zero mean per group, so only the epsilon differs).
- GRPO's std scaling: TRL divides by std + 1e-4, ours by std (1 where a group's std is 0).
- GRPO's constant aggregation (Dr. GRPO): TRL divides by env.max_new_tokens (max_completion_length), ours by
  algo.max_episode_steps; the same only when the two are equal.
- Minibatches: TRL shuffles a batch once and keeps its split for every epoch; ours reshuffles whole episodes each
  epoch.
- Prompts: TRL draws prompts without replacement, epoch by epoch (a shuffled dataset; a task with fewer prompts
  than a batch needs is repeated); our env draws each group's prompt uniformly with replacement.
- Settings TRL has no form of, refused with a message: GRPO with env.kl_coef > 0 (KL in the reward; TRL's
  GRPO has only the loss term), a reference model other than the policy's initial weights (env.reference_model)
  and vBoN's log-quantile reward (env.quantile_reward_samples). RLOO's adaptive coefficient is ours applied to
  TRL's beta (above).
- Resume: a peer run is not resumable (resume= is refused); TRL keeps no checkpoint here.

The run folder
config.yaml (ours, with algo.name the peer's, e.g. trl_grpo, and the peer's library, class and arguments under
`peer`), policy/ (the trained causal LM and its tokenizer, save_pretrained; envs/text/evaluate.py reads it),
summary.json with our keys (the evaluation is ours: `eval_episodes` greedy episodes on environments seeded
seed + 10000, on the trained policy) and TensorBoard events with our tags, x = generated tokens so far:
charts/episodic_return (the batch's mean reward), charts/episodic_length, text/proxy_reward, text/gold_reward
(tasks with a gold scorer), text/samples, charts/learning_rate, charts/SPS, losses/policy_loss (TRL's training
loss: GRPO's includes its beta x KL term, as ours), losses/entropy, losses/clipfrac, text/kl (mean per-sequence
KL to the reference: TRL's per-token mean times the batch's mean completion length; RLOO's is the same k1 sum as
ours, GRPO's the k3 sum, on the batch's first minibatch; none when beta = 0, which loads no reference),
losses/ref_kl (GRPO: mean per-token k3, as ours), text/kl_coef (RLOO: beta after the batch's controller update,
as ours logs it), eval/mean_return, and every number TRL logs under trl/<its key>. Wall time covers
`trainer.train()` (after the models are loaded), as ours covers its training loop.

Speed (`--speed`): our algorithm (algos/grpo.py or algos/rloo.py) and its TRL peer, one after the other in one
process, on the same composed config (model, prompts, group size, budget, threads); results/trl_speed.md gets
both rates (generated tokens per second of wall time, generation and updates both counted), their ratio and the
command. Give both sides a KL weight (the tuned presets do): our text env computes the reference's log-probabilities
in every training run, while TRL loads no reference at all when its beta is 0.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from algos.cli import CONF_DIR, EXIT_BAD_INPUT
from algos.registry import hyperparameters
from algos.rollout import KLController
from algos.run import seed_everything
from algos.run_folder import RunFolder
from algos.settings import Config, check_config
from core.checks import require
from core.errors import ConfigError
from core.info import KL_COEF_TAG, KL_TAG, SAMPLES_TAG
from envs.text.env import Settings as TextSettings

REPO = Path(__file__).resolve().parent.parent
SPEED_RESULTS = REPO / "results" / "trl_speed.md"
# our algorithm -> (the peer's run name, TRL's trainer class, its config class)
PEERS = {"grpo": ("trl_grpo", "GRPOTrainer", "GRPOConfig"), "rloo": ("trl_rloo", "RLOOTrainer", "RLOOConfig")}
LOSS_TYPES = {"sequence": "grpo", "token": "bnpo", "constant": "dr_grpo"}  # our GRPO aggregation -> TRL loss_type
SAMPLES_LOGGED = 8


class PeerError(ConfigError):
    """A setting TRL cannot reproduce."""


@contextmanager
def hub_offline() -> Iterator[None]:
    """No Hugging Face hub access inside the block: huggingface_hub reads HF_HUB_OFFLINE once, at import, so its
    constants are set as well as the environment (and restored after)."""
    from huggingface_hub import constants

    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")}
    saved = constants.HF_HUB_OFFLINE, constants.HF_HUB_DISABLE_TELEMETRY
    os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    constants.HF_HUB_OFFLINE = constants.HF_HUB_DISABLE_TELEMETRY = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, constants.HF_HUB_DISABLE_TELEMETRY = saved
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def text_settings(config: Config[Any]) -> TextSettings:
    if not isinstance(config.env, TextSettings):
        raise PeerError(f"env.kind={config.env.kind}: TRL's trainers run on text tasks only; use env=text_sentiment")
    return config.env


def check_matchable(config: Config[Any]) -> None:
    """Stop with a message where TRL has no form of one of our settings."""
    hp, name = config.algo, config.raw.algo.name
    if name not in PEERS:
        raise PeerError(f"no TRL peer for algo={name}; peers exist for: {', '.join(PEERS)}")
    env = text_settings(config)
    if name == "grpo" and env.kl_coef > 0:
        raise PeerError(
            f"env.kl_coef={env.kl_coef} puts a KL penalty in the reward, which TRL's GRPOTrainer does not have (its "
            f"KL is the loss term, algo.kl_coef); set env.kl_coef=0 and give the KL weight as algo.kl_coef"
        )
    if env.quantile_reward_samples is not None:
        raise PeerError(
            f"env.quantile_reward_samples={env.quantile_reward_samples} (vBoN's log-quantile reward) is ours; the "
            "peer scores completions with the task's reward: set env.quantile_reward_samples=null"
        )
    if env.reference_model is not None and env.reference_model != env.policy_model:
        raise PeerError(
            f"env.reference_model={env.reference_model}: TRL's reference is the policy's initial weights; set "
            f"env.reference_model=null"
        )
    if hp.max_episode_steps < env.max_new_tokens:
        raise PeerError(
            f"algo.max_episode_steps={hp.max_episode_steps} cuts completions before env.max_new_tokens="
            f"{env.max_new_tokens} (unscored in ours); set algo.max_episode_steps >= env.max_new_tokens"
        )
    if config.raw.get("resume") is not None:
        raise PeerError("resume=: a TRL peer run cannot be resumed; start a new run")


def steps_per_batch(hp: Any) -> int:
    """Optimizer steps per batch of env.num_envs completions (one per minibatch per epoch), on both sides."""
    return int(hp.num_minibatches * hp.update_epochs)


def trainer_args(config: Config[Any], run_dir: Path) -> dict[str, Any]:
    """TRL's GRPOConfig / RLOOConfig arguments for our config (the TRL name of each of our settings)."""
    env, hp, name = text_settings(config), config.algo, config.raw.algo.name
    num_envs = env.num_envs
    require(
        num_envs % hp.group_size == 0,
        f"env.num_envs={num_envs} is not a multiple of algo.group_size={hp.group_size}; set env.num_envs to a "
        f"multiple of it",
    )
    require(
        num_envs % hp.num_minibatches == 0,
        f"algo.num_minibatches={hp.num_minibatches} must divide env.num_envs={num_envs}, the episodes per update",
    )
    # An upper bound: training stops on generated tokens (TokenBudget); every completion has at least one token.
    max_batches = math.ceil(config.run.total_timesteps / num_envs)
    common: dict[str, Any] = {
        "output_dir": str(run_dir / "trl"),
        "seed": config.run.seed,
        "use_cpu": True,
        "bf16": False,
        "fp16": False,
        "report_to": "none",
        "logging_steps": 1,
        "save_strategy": "no",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "max_steps": max_batches * steps_per_batch(hp),
        "learning_rate": hp.learning_rate,
        "adam_epsilon": hp.adam_eps,
        "weight_decay": 0.0,
        "max_grad_norm": hp.max_grad_norm,
        "num_generations": hp.group_size,
        "generation_batch_size": num_envs,
        "per_device_train_batch_size": num_envs // hp.num_minibatches,
        "gradient_accumulation_steps": 1,
        "num_iterations": hp.update_epochs,
        "max_completion_length": env.max_new_tokens,
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
        "mask_truncated_completions": False,
    }
    if name == "grpo":
        return {
            **common,
            "beta": hp.kl_coef,
            "epsilon": hp.clip_coef,
            "scale_rewards": "group" if hp.scale_rewards else "none",
            "loss_type": LOSS_TYPES[hp.loss_aggregation],
            "entropy_coef": hp.ent_coef,
            "use_bias_correction_kl": False,
        }
    return {
        **common,
        "beta": env.kl_coef,
        # without clipping ours takes one on-policy step per batch, where the ratio is 1 and TRL's clip is inert
        "epsilon": hp.clip_coef if hp.clip_coef is not None else 0.2,
        "normalize_advantages": hp.normalize_advantages,
    }


def trl_config(config_class: type, args: dict[str, Any]):
    """TRL's config with no activation checkpointing (TRL's default turns it on; ours has none). transformers 5.24
    renamed gradient_checkpointing to activation_checkpointing and warns on the old name."""
    names = {field.name for field in dataclasses.fields(config_class)}
    off = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return config_class(**args, **{off: False})


def peer_tokenizer(policy_model: str, task: Any, max_prompt_tokens: int):
    """The policy's tokenizer, set up so that TRL's `tokenizer(text=prompts)` gives our env's prompt ids
    (`<bos>` + prompt, no `<eos>`: envs/text/tokens.py), checked on every prompt of the task."""
    from envs.text.env import encode_prompts
    from envs.text.loading import load_tokenizer

    tokenizer = load_tokenizer(policy_model)
    ours = encode_prompts(task, tokenizer, max_prompt_tokens)  # also checks each prompt's length
    if tokenizer(text=task.prompts)["input_ids"] != ours:
        tokenizer.add_bos_token = tokenizer.bos_token_id is not None
        tokenizer.add_eos_token = False
    if tokenizer(text=task.prompts)["input_ids"] != ours:
        raise PeerError(
            f"the tokenizer of {policy_model} cannot be set to encode prompts as our env does (<bos> + prompt); "
            f"TRL would see other prompt tokens"
        )
    tokenizer.padding_side = "left"
    return tokenizer


class TokenBudget:
    """Generated tokens so far, against total_timesteps; the learning-rate factor our annealing gives each batch."""

    def __init__(self, total: int, per_batch: int, anneal: bool):
        self.total, self.per_batch, self.anneal = total, per_batch, anneal
        self.tokens = self.batches = self.batch_tokens = 0
        self.factor = 1.0

    def lr_factor(self, optimizer_steps: int) -> float:
        """For LambdaLR: 1 - progress at the start of each batch, held for the batch's steps."""
        if optimizer_steps % self.per_batch == 0 and self.anneal:
            self.factor = 1.0 - min(1.0, self.tokens / self.total)
        return self.factor

    def spent(self, optimizer_steps: int) -> bool:
        return optimizer_steps % self.per_batch == 0 and self.tokens >= self.total


class TaskReward:
    """TRL's reward function: the task's reward of (prompt, completion), with the batch's episode statistics
    written under our tags at the generated-token count they reach."""

    def __init__(self, task: Any, writer: Any, budget: TokenBudget):
        self.task, self.writer, self.budget = task, writer, budget
        self.__name__ = f"{task.name}_reward"  # TRL names the reward's metrics after it

    def __call__(self, prompts: list[str], completions: list[str], completion_ids: list[list[int]], **_) -> list:
        scores = self.task.checked_scores(prompts, completions)
        lengths = [len(ids) for ids in completion_ids]
        self.budget.batch_tokens = sum(lengths)
        self.budget.tokens += sum(lengths)
        self.budget.batches += 1
        step, mean = self.budget.tokens, float(scores.mean())
        self.writer.add_scalar("charts/episodic_return", mean, step)
        self.writer.add_scalar("charts/episodic_length", float(np.mean(lengths)), step)
        self.writer.add_scalar("text/proxy_reward", mean, step)
        if self.task.gold is not None:
            self.writer.add_scalar("text/gold_reward", float(np.mean(self.task.gold(prompts, completions))), step)
        samples = [f"- `{p} -> {c}`" for p, c in zip(prompts[:SAMPLES_LOGGED], completions[:SAMPLES_LOGGED])]
        self.writer.add_text(SAMPLES_TAG, "\n".join(samples), step)
        return scores.tolist()


# TRL's logged key -> our tag (x = generated tokens); every TRL number is also kept under trl/<key>
TAGS = {
    "loss": "losses/policy_loss",
    "learning_rate": "charts/learning_rate",
    "entropy": "losses/entropy",
    "clip_ratio/region_mean": "losses/clipfrac",
}


def our_tags(writer: Any, budget: TokenBudget, algo: str, beta: float, kl: KLController | None):
    """A TRL callback: TRL's logs under our tags, charts/SPS, the stop at the token budget, and, with `kl`, our
    adaptive KL coefficient set as the trainer's beta after each batch (set the callback's `trainer` first)."""
    from transformers import TrainerCallback

    class OurTags(TrainerCallback):
        trainer: Any = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if budget.spent(state.global_step):
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            step, logs = budget.tokens, logs or {}
            numbers = {k: float(v) for k, v in logs.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            for key, value in numbers.items():
                writer.add_scalar(f"trl/{key}", value, step)
                if key in TAGS:
                    writer.add_scalar(TAGS[key], value, step)
            if "kl" in numbers and "completions/mean_length" in numbers:  # a batch's first step
                sequence_kl = numbers["kl"] * numbers["completions/mean_length"]
                writer.add_scalar(KL_TAG, sequence_kl, step)
                if kl is not None:  # ours: after each batch, from its mean per-sequence KL and its tokens
                    kl.update(sequence_kl, budget.batch_tokens)
                    self.trainer.beta = kl.beta
            if algo == "grpo" and "kl" in numbers:
                writer.add_scalar("losses/ref_kl", numbers["kl"], step)
            if algo == "rloo" and beta > 0:
                writer.add_scalar(KL_COEF_TAG, kl.beta if kl is not None else beta, step)
            writer.add_scalar("charts/SPS", step / (time.perf_counter() - self.start), step)

    return OurTags()


def versions() -> dict[str, str]:
    return {name: version(name) for name in ("trl", "transformers", "accelerate", "datasets", "torch")}


def train_peer(cfg: DictConfig, run_dir: Path) -> dict:
    """Train the TRL peer of `cfg.algo` in `run_dir`; returns (and writes) the summary."""
    if cfg.algo.name not in PEERS:
        raise PeerError(f"no TRL peer for algo={cfg.algo.name}; peers exist for: {', '.join(PEERS)}")
    config: Config[Any] = check_config(cfg, hyperparameters(cfg.algo.name))
    check_matchable(config)
    with hub_offline():
        return _train(config, run_dir)


def _train(config: Config[Any], run_dir: Path) -> dict:
    import trl
    from datasets import Dataset
    from transformers import PrinterCallback

    from algos.evaluation import play_greedy
    from algos.networks import make_agent
    from envs import make_vector_env
    from envs.text.loading import load_causal_lm, load_tokenizer
    from envs.text.tasks import load_task

    algo, env, hp, run = config.raw.algo.name, text_settings(config), config.algo, config.run
    name, trainer_class, config_class = PEERS[algo]
    args = trainer_args(config, run_dir)
    peer = {"name": name, "library": f"trl {version('trl')}", "class": trainer_class, "config": args}
    raw = OmegaConf.to_container(config.raw, resolve=True)
    assert isinstance(raw, dict)  # a DictConfig becomes a dict
    saved = Config(
        config.run,
        env,
        hp,
        OmegaConf.create({**raw, "algo": {**raw["algo"], "name": name}, "peer": peer}),
        config.placement,
    )
    folder = RunFolder(saved, name, run_dir)
    folder.open(purge_step=None)  # config.yaml first, so a run failing from here on is reported under the peer's name

    seed_everything(run.seed, run.torch_threads, config.placement.device)
    task = load_task(env.task, env)
    policy_model = env.policy_model or task.default_policy_model
    if policy_model is None:
        raise ConfigError(f"task {task.name!r} names no default model; set env.policy_model")
    tokenizer = peer_tokenizer(str(policy_model), task, env.max_prompt_tokens)
    model, _ = load_causal_lm(policy_model)
    context = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    require(
        env.max_prompt_tokens + env.max_new_tokens <= context,
        f"env.max_prompt_tokens + env.max_new_tokens = {env.max_prompt_tokens + env.max_new_tokens} is more than "
        f"the model's context of {context} tokens; lower them",
    )
    prompts = list(task.prompts)
    prompts *= math.ceil(env.num_envs // hp.group_size / len(prompts))  # a batch needs this many distinct rows
    budget = TokenBudget(run.total_timesteps, steps_per_batch(hp), hp.anneal_lr)
    optimizer = torch.optim.Adam(model.parameters(), lr=hp.learning_rate, eps=hp.adam_eps, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, budget.lr_factor)
    penalty = env.kl_penalty() if algo == "rloo" else None
    controller = KLController(penalty) if penalty is not None and penalty.target is not None else None
    callback = our_tags(folder.writer, budget, algo, float(args["beta"]), controller)
    trainer = getattr(trl, trainer_class)(
        model=model,
        reward_funcs=TaskReward(task, folder.writer, budget),
        args=trl_config(getattr(trl, config_class), args),
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
        callbacks=[callback],
        optimizers=(optimizer, schedule),
    )
    callback.trainer = trainer
    trainer.remove_callback(PrinterCallback)  # our events hold the logs

    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start

    if not any(Path(args["output_dir"]).iterdir()):
        Path(args["output_dir"]).rmdir()  # TRL's own output folder, unused (no checkpoints, no reports)
    policy_dir = run_dir / "policy"
    trainer.model.save_pretrained(policy_dir)
    load_tokenizer(policy_model).save_pretrained(policy_dir)  # as saved with the base LM (no prompt set-up)
    evaluated = dataclasses.replace(env, policy_model=str(policy_dir), reference_model=None)
    envs = make_vector_env(evaluated, run.eval_episodes, training=False)
    agent = make_agent(envs.single_observation_space, envs.single_action_space, run.net)
    returns = play_greedy(agent, envs, run.seed + 10_000)
    folder.writer.add_scalar("eval/mean_return", float(returns.mean()), budget.tokens)
    summary = folder.write_summary(
        {
            "total_env_steps": budget.tokens,
            "wall_clock_s": round(wall, 3),
            "steps_per_second": round(budget.tokens / wall, 1) if wall > 0 else None,
            "eval": {
                "mean": float(returns.mean()),
                "std": float(returns.std()),
                "episodes": len(returns),
                "policy": "deterministic (argmax / Gaussian mean)",
                "returns": returns.tolist(),
            },
            "peer": {
                **peer,
                "batches": budget.batches,
                "optimizer_steps": trainer.state.global_step,
                "final_beta": float(trainer.beta),
                "versions": versions(),
            },
        }
    )
    return summary


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="trl_peers")
def run_peer(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        summary = train_peer(cfg, run_dir)
    except ConfigError as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra records this job as failed and the sweep goes on with the others
        print(f"tokengym: error: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    print(f"run folder: {run_dir} (eval return {summary['eval']['mean']:.4g})", file=sys.stderr)
    return summary["eval"]["mean"]


# ------------------------------------------------------------------------------------------------ --speed
def _choice(overrides: list[str], group: str) -> str | None:
    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith(f"{group}=")]
    return chosen[-1] if chosen else None


def speed_comparison(overrides: list[str], out: Path) -> dict:
    """Our algorithm, then its TRL peer, on the config `overrides` compose (algo=grpo unless given); writes `out`
    with both training rates in generated tokens per second, their ratio and the command; returns the figures."""
    from hydra import compose, initialize_config_dir

    if _choice(overrides, "algo") is None:
        overrides = ["algo=grpo", *overrides]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    algo = cfg.algo.name
    check_matchable(check_config(cfg, hyperparameters(algo)))  # before our run, so a mismatch costs nothing
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    root = Path(cfg.run_root) / f"trl-speed-{algo}-{_choice(overrides, 'env') or 'default'}-seed{cfg.seed}-{stamp}"
    load = [os.getloadavg()[0]]  # other jobs on the machine slow both sides; the figures say how busy it was
    ours = importlib.import_module(f"algos.{algo}").train(cfg, root / "ours")
    load.append(os.getloadavg()[0])
    theirs = train_peer(cfg, root / "trl")
    load.append(os.getloadavg()[0])
    ratio = ours["steps_per_second"] / theirs["steps_per_second"]
    command = shlex.join(["python", "-m", "benchmarks.trl_peers", "--speed", *overrides])
    rows = [("ours", f"algos/{algo}.py", ours), (PEERS[algo][0], f"TRL {version('trl')} {PEERS[algo][1]}", theirs)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "\n".join(
            [
                f"# Ours vs TRL: end-to-end training speed of {algo.upper()} on the CPU",
                "",
                f"Written by `benchmarks/trl_peers.py --speed` on {datetime.now():%Y-%m-%d %H:%M}: our "
                f"{algo.upper()} and TRL's, one after the other in one process, on the same composed config: the "
                f"same policy model, prompts, group size ({cfg.algo.group_size}), completions per batch "
                f"({cfg.env.num_envs}), completion length ({cfg.env.max_new_tokens}), budget "
                f"(total_timesteps={cfg.total_timesteps} generated tokens) and torch threads ({cfg.torch_threads}). "
                f"Rate = generated tokens / wall time of training (generation, scoring and updates; model loading "
                f"and the final evaluation excluded).",
                "",
                "| implementation | code | generated tokens | wall clock (s) | tokens / s | eval return |",
                "|---|---|---:|---:|---:|---:|",
                *(
                    f"| {label} | {what} | {s['total_env_steps']} | {s['wall_clock_s']:.1f} | "
                    f"{s['steps_per_second']:.1f} | {s['eval']['mean']:.3g} |"
                    for label, what, s in rows
                ),
                "",
                f"**ours / TRL = {ratio:.2f}x** (the issue asks >= 1.5x).",
                "",
                f"Command: `{command}`",
                "",
                f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch "
                f"{version('torch')}, transformers {version('transformers')}, trl {version('trl')}; load average "
                f"(1 min) {load[0]:.2f} before ours, {load[1]:.2f} between, {load[2]:.2f} after TRL's (a load above "
                f"{os.cpu_count()} would mean other jobs shared the cores). Run folders: `{root}`.",
                "",
            ]
        )
    )
    return {"ours": ours["steps_per_second"], "trl": theirs["steps_per_second"], "ratio": ratio, "command": command}


def main() -> None:
    args = sys.argv[1:]
    if "--speed" not in args:
        run_peer()
        return
    args.remove("--speed")
    try:
        figures = speed_comparison(args, SPEED_RESULTS)
    except ConfigError as err:
        print(f"tokengym: error: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    print(json.dumps(figures), file=sys.stderr)
    print(f"written: {SPEED_RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
