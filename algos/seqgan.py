"""SeqGAN: Yu et al. 2017, "SeqGAN: Sequence Generative Adversarial Nets with Policy Gradient", section 3.

The generator G_theta is a policy over the next token; the discriminator D_phi tells real sequences from
generated ones, and its probability of "real" is the reward, given only for a finished sequence Y_1:T. The value
of a prefix comes from N Monte Carlo completions by a rollout policy G_beta (eq. 4):

    Q(Y_1:t-1, y_t) = 1/N sum_n D_phi(Y^n_1:T),  Y^n_1:T ~ MC^G_beta(Y_1:t; N)    for t < T
                    = D_phi(Y_1:T)                                              for t = T

    grad J(theta) ~= sum_t E_{y_t ~ G_theta}[ grad log G_theta(y_t | Y_1:t-1) Q(Y_1:t-1, y_t) ]   (eq. 6-8)

D_phi minimises the cross-entropy of real against generated sequences (eq. 5). Algorithm 1: pre-train G by MLE
and D on G's samples, then alternate one G step with rounds of D training on fresh negatives. G_beta is a delayed
copy of G (the authors' code: beta <- 0.8 beta + 0.2 theta after each G step, embeddings copied outright).

Options beyond the paper: a per-position baseline (the mean Q over the batch at each t; the paper has none, so its
gradient carries the whole reward's variance), and `generator_update=ppo`: PPO-clip (algos/ppo_clip.py, eq. 7) on
the same Q-based advantages, several epochs per batch of samples.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from algos import distributed
from algos.discriminator import Discriminator
from algos.ppo_clip import clipped_surrogate_loss
from algos.run import seed_everything
from algos.seqgan_run import SeqGANRun, evaluate_generator, schedule
from algos.settings import check_config
from core.checks import require, require_choice, require_positive
from envs import make_sequence_task
from envs.sequences import (
    Generator,
    LSTMLanguageModel,
    SequenceTask,
    TransformerLanguageModel,
    evaluating,
    generate,
    token_log_likelihoods,
)


# ------------------------------------------------------------------------------------------------- losses
def discriminator_loss(disc: Discriminator, sequences: torch.Tensor, labels: torch.Tensor, l2: float) -> torch.Tensor:
    """Eq. 5 as cross-entropy, plus the SeqGAN code's l2 * (||W||^2 + ||b||^2) / 2 on the output layer."""
    penalty = sum(p.pow(2).sum() for p in disc.output.parameters()) / 2
    return F.cross_entropy(disc(sequences), labels) + l2 * penalty


def mle_loss(generator: Generator, sequences: torch.Tensor) -> torch.Tensor:
    return -token_log_likelihoods(generator.logits(sequences), sequences).mean()


def policy_gradient_loss(log_probs: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """-sum_t log G(y_t | Y_1:t-1) Q_t (eq. 8), summed over batch and positions as in the authors' code."""
    return -(log_probs * advantages).sum()


def advantages(rewards: torch.Tensor, baseline: bool) -> torch.Tensor:
    return rewards - rewards.mean(0, keepdim=True) if baseline else rewards


# ------------------------------------------------------------------------------------------- rewards (eq. 4)
def monte_carlo_rewards(
    rollout_policy: Generator, disc: Discriminator, sequences: torch.Tensor, rollout_num: int
) -> torch.Tensor:
    """[B, T] Q(Y_1:t-1, y_t): for t < T the mean D over `rollout_num` completions of Y_1:t by the rollout
    policy, all N copies of the batch completed in one batch; for t = T, D(Y_1:T) itself."""
    batch, length = sequences.shape
    copies = sequences.repeat(rollout_num, 1)
    rewards = torch.empty(batch, length, device=sequences.device)
    with evaluating(rollout_policy):
        for t in range(1, length):
            completed = rollout_policy.complete(copies[:, :t], length)
            rewards[:, t - 1] = disc.prob_real(completed).view(rollout_num, batch).mean(0)
    rewards[:, -1] = disc.prob_real(sequences)
    return rewards


@torch.no_grad()
def update_rollout_policy(rollout_policy: Generator, generator: Generator, rate: float) -> None:
    """beta <- rate * beta + (1 - rate) * theta; embedding tables are copied outright (the authors' code)."""
    for (name, beta), theta in zip(rollout_policy.named_parameters(), generator.parameters()):
        module = rollout_policy.get_submodule(name.rsplit(".", 1)[0]) if "." in name else rollout_policy
        if isinstance(module, nn.Embedding):
            beta.copy_(theta)
        else:
            beta.mul_(rate).add_(theta, alpha=1 - rate)


@dataclass
class Hyperparameters:
    """The settings of the authors' code (sequence_gan.py, discriminator.py, rollout.py). A run's length is set by
    the epoch counts below; total_timesteps does not apply. The defaults here are the only ones: algos/registry.py
    stores them as the Hydra config group `algo`."""

    name: str = "seqgan"
    generator: str = "lstm"  # "lstm" (the paper's) or "transformer" (GPT-2 style; a text task's base LM if it has one)
    embedding_dim: int = 32
    hidden_dim: int = 32
    gen_learning_rate: float = 0.01  # Adam step size of both generator optimisers (MLE and adversarial)
    grad_clip: float = 5.0  # global gradient-norm clip of the generator
    batch_size: int = 64
    pretrain_epochs: int = 120  # MLE epochs over the real data
    dis_embedding_dim: int = 64
    dis_filter_sizes: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20])
    dis_num_filters: list[int] = field(
        default_factory=lambda: [100, 200, 200, 200, 200, 100, 100, 100, 100, 100, 160, 160]
    )
    dis_dropout: float = 0.25  # the paper's keep probability 0.75
    dis_l2: float = 0.2  # L2 penalty on the output layer
    dis_learning_rate: float = 1e-4
    dis_pretrain_rounds: int = 50  # rounds of (fresh negatives, dis_epochs epochs) before adversarial training
    dis_epochs: int = 3
    num_negatives: int | None = None  # generated sequences per discriminator round, beside as many real ones
    # drawn at random; null: all real sequences and as many generated
    adversarial_epochs: int = 150  # each: one generator step, then dis_rounds discriminator rounds
    dis_rounds: int = 5
    rollout_num: int = 16  # N of eq. 4
    rollout_update_rate: float = 0.8  # beta <- rate * beta + (1 - rate) * theta
    baseline: bool = False  # subtract the batch-mean Q at each position (not in the paper)
    generator_update: str = "pg"  # "pg" (eq. 8, as the paper) or "ppo" (clipped surrogate, several epochs)
    ppo_epochs: int = 4
    clip_coef: float = 0.2
    eval_every: int = 5  # epochs between evaluations of the generator's samples (the paper logs every 5)
    init_from: str | None = None  # a SeqGAN run folder that finished pre-training: start adversarial training
    # from its generator, discriminator and optimisers (variants compared paired)

    def __post_init__(self):
        require_choice(self, "generator", ("lstm", "transformer"))
        require_choice(self, "generator_update", ("pg", "ppo"))
        require_positive(
            self,
            "embedding_dim",
            "hidden_dim",
            "gen_learning_rate",
            "grad_clip",
            "batch_size",
            "dis_embedding_dim",
            "dis_learning_rate",
            "dis_epochs",
            "dis_rounds",
            "rollout_num",
            "ppo_epochs",
            "clip_coef",
            "eval_every",
        )
        require(
            min(self.pretrain_epochs, self.dis_pretrain_rounds, self.adversarial_epochs) >= 0,
            "algo.pretrain_epochs, algo.dis_pretrain_rounds and algo.adversarial_epochs must be >= 0",
        )
        require(
            len(self.dis_filter_sizes) == len(self.dis_num_filters) > 0
            and min(self.dis_filter_sizes + self.dis_num_filters) > 0,
            f"algo.dis_filter_sizes={self.dis_filter_sizes} and algo.dis_num_filters="
            f"{self.dis_num_filters} must be positive lists of the same length",
        )
        require(
            0 <= self.dis_dropout < 1 and 0 <= self.rollout_update_rate <= 1 and self.dis_l2 >= 0,
            "algo.dis_dropout must be in [0, 1), algo.rollout_update_rate in [0, 1], algo.dis_l2 >= 0",
        )
        require(self.num_negatives is None or self.num_negatives > 0, "algo.num_negatives must be > 0")


# -------------------------------------------------------------------------------------------- generator steps
def generator_step(
    generator: Generator,
    optimizer: torch.optim.Optimizer,
    samples: torch.Tensor,
    rewards: torch.Tensor,
    hp: Hyperparameters,
) -> float:
    adv = advantages(rewards, hp.baseline)
    if hp.generator_update == "pg":
        return _optimise(
            generator,
            optimizer,
            policy_gradient_loss(token_log_likelihoods(generator.logits(samples), samples), adv),
            hp.grad_clip,
        )
    with evaluating(generator):
        old_log_probs = token_log_likelihoods(generator.logits(samples), samples)
    for _ in range(hp.ppo_epochs):
        ratio = (token_log_likelihoods(generator.logits(samples), samples) - old_log_probs).exp()
        loss = _optimise(generator, optimizer, clipped_surrogate_loss(ratio, adv, hp.clip_coef), hp.grad_clip)
    return loss


def _optimise(model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, clip: float | None) -> float:
    optimizer.zero_grad()
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip, foreach=True)
    optimizer.step()
    return loss.item()


def mle_epoch(generator: Generator, optimizer: torch.optim.Optimizer, real: torch.Tensor, hp: Hyperparameters) -> float:
    losses = [
        _optimise(generator, optimizer, mle_loss(generator, real[idx]), hp.grad_clip)
        for idx in torch.randperm(len(real), device=real.device).split(hp.batch_size)
    ]
    return sum(losses) / len(losses)


def discriminator_round(
    disc: Discriminator, optimizer: torch.optim.Optimizer, generator: Generator, real: torch.Tensor, hp: Hyperparameters
) -> tuple[float, float]:
    """Fresh negatives from the generator, then `dis_epochs` epochs over real + generated: (the last epoch's
    mean loss, accuracy after the round)."""
    if hp.num_negatives is not None:
        real = real[torch.randperm(len(real), device=real.device)[: hp.num_negatives]]
    negatives = generate(generator, len(real), real.shape[1])
    data = torch.cat([real, negatives])
    labels = torch.cat(
        [
            torch.ones(len(real), dtype=torch.long, device=real.device),
            torch.zeros(len(negatives), dtype=torch.long, device=real.device),
        ]
    )
    for _ in range(hp.dis_epochs):
        losses = [
            _optimise(disc, optimizer, discriminator_loss(disc, data[idx], labels[idx], hp.dis_l2), None)
            for idx in torch.randperm(len(data), device=data.device).split(hp.batch_size)
        ]
    accuracy = ((disc.prob_real(data) > 0.5).long() == labels).float().mean().item()
    return sum(losses) / len(losses), accuracy


# ------------------------------------------------------------------------------------------------- the run
def make_generator(task: SequenceTask, hp: Hyperparameters) -> Generator:
    if hp.generator == "lstm":
        return LSTMLanguageModel(task.vocab_size, hp.embedding_dim, hp.hidden_dim, task.start_token)
    if task.pretrained_generator:
        return TransformerLanguageModel.pretrained(task.pretrained_generator, task.start_token)
    return TransformerLanguageModel.fresh(task.vocab_size, task.length, task.start_token, width=hp.hidden_dim * 2)


def train(cfg: DictConfig, run_dir: Path) -> dict:
    config = check_config(cfg, Hyperparameters)
    hp, device = config.algo, config.placement.device
    require(
        distributed.world_size() == 1,
        f"algo=seqgan runs in one process, and this is one of {distributed.world_size()} torchrun ranks: start it "
        f"with python -m algos (data-parallel training covers the RL algorithms)",
    )
    require(
        config.placement.precision == "fp32",
        f"precision={config.placement.precision}: algo=seqgan computes in fp32; set precision=fp32",
    )
    seed_everything(config.run.seed, config.run.torch_threads, device)
    with torch.device("cpu"):  # built on the CPU, so a seed gives the same networks on every device
        task = make_sequence_task(config.env)
        generator = make_generator(task, hp).to(device)
        disc = Discriminator(
            task.vocab_size, task.length, hp.dis_embedding_dim, hp.dis_filter_sizes, hp.dis_num_filters, hp.dis_dropout
        ).to(device)
    task = dataclasses.replace(task, real=task.real.to(device))
    rollout_policy = copy.deepcopy(generator).requires_grad_(False)
    # Separate Adam states for MLE and adversarial steps, as the authors' code has: the policy-gradient loss is a
    # sum over tokens, and moment estimates carried over from the MLE loss's mean would mis-scale its first steps.
    mle_opt = torch.optim.Adam(generator.parameters(), lr=hp.gen_learning_rate, fused=True)
    adv_opt = torch.optim.Adam(generator.parameters(), lr=hp.gen_learning_rate, fused=True)
    dis_opt = torch.optim.Adam(disc.parameters(), lr=hp.dis_learning_rate, fused=True)
    units = schedule(hp.pretrain_epochs, hp.dis_pretrain_rounds, hp.adversarial_epochs)
    run = SeqGANRun(
        config,
        run_dir,
        {"generator": generator, "rollout": rollout_policy, "discriminator": disc},
        {"generator_mle": mle_opt, "generator_adversarial": adv_opt, "discriminator": dis_opt},
        hp.pretrain_epochs + hp.dis_pretrain_rounds,
    )
    first = run.start(hp.init_from)
    if first == 0:
        evaluate_generator(run, generator, task, 0, "initial")

    for index in range(first, len(units)):
        phase, i = units[index]
        step = index + 1
        if phase == "mle":
            run.log(step, {"losses/mle_loss": mle_epoch(generator, mle_opt, task.real, hp)})
            if (i + 1) % hp.eval_every == 0 or i + 1 == hp.pretrain_epochs:
                evaluate_generator(run, generator, task, step, "mle")
        elif phase == "dis":
            loss, accuracy = discriminator_round(disc, dis_opt, generator, task.real, hp)
            run.log(step, {"losses/discriminator_loss": loss, "charts/discriminator_accuracy": accuracy})
        else:
            adversarial_epoch(run, hp, task, generator, rollout_policy, disc, adv_opt, dis_opt, i, step)
        run.end_unit(index + 1, len(units))
    return run.finish(len(units), task)


def adversarial_epoch(
    run: SeqGANRun,
    hp: Hyperparameters,
    task: SequenceTask,
    generator: Generator,
    rollout_policy: Generator,
    disc: Discriminator,
    gen_opt: torch.optim.Optimizer,
    dis_opt: torch.optim.Optimizer,
    epoch: int,
    step: int,
) -> None:
    if epoch == 0:
        rollout_policy.load_state_dict(generator.state_dict())
    samples = generate(generator, hp.batch_size, task.length)
    rewards = monte_carlo_rewards(rollout_policy, disc, samples, hp.rollout_num)
    policy_loss = generator_step(generator, gen_opt, samples, rewards, hp)
    update_rollout_policy(rollout_policy, generator, hp.rollout_update_rate)
    scalars = {"losses/policy_loss": policy_loss, "charts/mean_reward": rewards[:, -1].mean().item()}
    for _ in range(hp.dis_rounds):
        scalars["losses/discriminator_loss"], scalars["charts/discriminator_accuracy"] = discriminator_round(
            disc, dis_opt, generator, task.real, hp
        )
    run.log(step, scalars)
    if (epoch + 1) % hp.eval_every == 0 or epoch + 1 == hp.adversarial_epochs:
        evaluate_generator(run, generator, task, step, "adversarial")


if __name__ == "__main__":
    from algos.cli import main

    main(algo="seqgan")
