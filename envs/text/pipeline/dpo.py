"""DPO (Rafailov et al. 2023, "Direct preference optimization: your language model is secretly a reward model"):
the policy trained offline on ranked comparisons, with no reward model and no sampling, starting from the task's
base LM, which also serves, frozen, as the reference pi_ref. Eq. 7:

    L_DPO(pi_theta; pi_ref) = -E_{(x, y_w, y_l) ~ D} [ log sigmoid( beta log pi_theta(y_w|x) / pi_ref(y_w|x)
                                                                   - beta log pi_theta(y_l|x) / pi_ref(y_l|x) ) ]

It is the reward model's Bradley-Terry ranking loss (InstructGPT eq. 1, `ranking_loss` in reward_model.py) with
the implicit reward r(x, y) = beta log pi_theta(y|x) / pi_ref(y|x) (Rafailov et al. sec. 5) in place of the
reward model: every pair (y_w, y_l) of each K-wise ranking, a group's pairs averaged over their number.

Data: the reward model's own training groups (make_ranked_groups on the held-in sentences with the reward model's
settings and seed, cache.training_ranked_groups). log pi(y|x) sums the log-probabilities of the
response's tokens and the EOS that ends it (as an episode ends, and as the base LM saw sentences end) after
`<bos> prompt` (envs/text/tokens.py), the prompt's own tokens excluded; a sequence longer than the model's context
is cut there.

    python -m envs.text.pipeline.dpo --beta 0.1 --out results/runs/dpo/beta0.1-seed0

writes <out>/policy (save_pretrained, tokenizer included), <out>/config.yaml (the env group of env=text_sentiment
and the DPO settings, in a run's shape) and <out>/summary.json; `python -m envs.text.evaluate <out>` evaluates it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from core.checks import require
from core.errors import ConfigError
from core.files import atomic_write
from envs.text.evaluate import token_logprobs
from envs.text.loading import load_causal_lm
from envs.text.pipeline.base_lm import warmup_cosine
from envs.text.pipeline.cache import ensure_text_models, heldout_ranked_groups, split_corpus, training_ranked_groups
from envs.text.pipeline.reward_model import RankedGroup, pairwise_accuracy, ranking_loss
from envs.text.pipeline.settings import TextModelSettings
from envs.text.tokens import encode_prompt

log = logging.getLogger("tokengym.text")

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"
ENV_GROUP = "text_sentiment"  # the default task's env group, as a run on env=text_sentiment records it
FORWARD_ROWS = 256  # sequences per forward pass where no gradient is taken
MEASURED_GROUPS = 1000  # groups measured after training, held-in and held-out (as the reward model's build does)


@dataclass
class DPOSettings:
    """beta: eq. 7's beta, the weight of the KL to the reference in the objective DPO solves.
    epochs, learning_rate, batch_groups: passes over the groups, AdamW's peak rate (linear warm-up over 5% of the
    steps, cosine decay to 10%, as the reward model's), whole K-response groups per batch (all pairs of a ranking
    share a batch, as the reward model's do). seed: batch order and torch's generator (the data's seed is the
    reward model's, TextModelSettings.seed). threads: torch CPU threads (1, as the model build uses)."""

    name: str = "dpo"
    beta: float = 0.1
    epochs: int = 2
    learning_rate: float = 1e-4
    batch_groups: int = 16
    seed: int = 0
    threads: int = 1

    def __post_init__(self):
        for name in ("beta", "epochs", "learning_rate", "batch_groups", "threads"):
            require(getattr(self, name) > 0, f"--{name.replace('_', '-')}={getattr(self, name)} must be > 0")


def dpo_loss(
    policy_logps: torch.Tensor, reference_logps: torch.Tensor, scores: torch.Tensor, beta: float
) -> torch.Tensor:
    """Eq. 7 over a batch of groups, all (groups, K): log pi_theta(y|x), log pi_ref(y|x), the labeller's scores.
    The mean over each group's pairs (score_w > score_l) of -log sigmoid(beta (h_w - h_l)), h = log pi_theta/pi_ref,
    then over groups: `ranking_loss` of the implicit rewards beta h."""
    return ranking_loss(implicit_rewards(policy_logps, reference_logps, beta), scores)


def implicit_rewards(policy_logps: torch.Tensor, reference_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """r(x, y) = beta log pi_theta(y|x) / pi_ref(y|x), DPO's reward (Rafailov et al. eq. 5 without beta log Z(x),
    which cancels in every pair)."""
    return beta * (policy_logps - reference_logps)


@dataclass
class EncodedGroups:
    """The K sequences of group g at rows g*K .. g*K + K - 1: `<bos> prompt response <eos>` ids and the prompt's
    length; scores (groups, K)."""

    token_ids: list[list[int]]
    prompt_lengths: list[int]
    scores: torch.Tensor

    @property
    def k(self) -> int:
        return self.scores.shape[1]

    def rows(self, groups: list[int]) -> tuple[list[list[int]], list[int]]:
        chosen = [g * self.k + i for g in groups for i in range(self.k)]
        return [self.token_ids[r] for r in chosen], [self.prompt_lengths[r] for r in chosen]


def encode_groups(tokenizer, groups: list[RankedGroup], context: int) -> EncodedGroups:
    """Groups that rank (at least two scores differ; the others give no pair), encoded for teacher forcing."""
    ranked = [g for g in groups if len(set(g.scores)) > 1]
    require(bool(ranked), "no group has two responses the labeller scores differently; DPO has no pair to learn from")
    k = len(ranked[0].responses)
    require(all(len(g.responses) == k for g in ranked), "every group needs the same number K of responses")
    token_ids, prompt_lengths = [], []
    for group in ranked:
        prompt_ids = encode_prompt(tokenizer, group.prompt)
        for response in group.responses:
            response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            token_ids.append((prompt_ids + response_ids)[:context])
            prompt_lengths.append(len(prompt_ids))
    return EncodedGroups(token_ids, prompt_lengths, torch.tensor([g.scores for g in ranked], dtype=torch.float64))


def sequence_logps(lm, data: EncodedGroups, groups: list[int]) -> torch.Tensor:
    """log pi(y|x) of the groups' sequences, (len(groups), K): the sum over the completion's tokens only."""
    logp, _ = token_logprobs(lm, *data.rows(groups))
    return logp.sum(-1).view(len(groups), data.k)


@torch.no_grad()
def all_sequence_logps(lm, data: EncodedGroups) -> torch.Tensor:
    """log pi(y|x) of every group, (groups, K), without gradient; the sequences are forwarded FORWARD_ROWS at a
    time in order of length, so that little of each pass is padding."""
    order = sorted(range(len(data.token_ids)), key=lambda row: len(data.token_ids[row]))
    sums = torch.empty(len(order))
    for first in range(0, len(order), FORWARD_ROWS):
        rows = order[first : first + FORWARD_ROWS]
        logp, _ = token_logprobs(lm, [data.token_ids[r] for r in rows], [data.prompt_lengths[r] for r in rows])
        sums[rows] = logp.sum(-1)
    return sums.view(-1, data.k)


def context_length(lm) -> int:
    return getattr(lm.config, "n_positions", None) or lm.config.max_position_embeddings


def train_dpo(policy, reference, tokenizer, groups: list[RankedGroup], settings: DPOSettings) -> list[float]:
    """AdamW on eq. 7, `batch_groups` whole groups per batch, warm-up-cosine rate, gradient norm clipped at 1;
    pi_ref's log-probabilities are computed once, before training. Returns each step's loss."""
    data = encode_groups(tokenizer, groups, context_length(policy))
    reference_logps = all_sequence_logps(reference, data)
    rng = random.Random(settings.seed)
    n_groups = len(data.scores)
    total_steps = math.ceil(n_groups / settings.batch_groups) * settings.epochs
    optimizer = torch.optim.AdamW(policy.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total_steps))
    policy.train()
    losses: list[float] = []
    start = time.perf_counter()
    for _ in range(settings.epochs):
        order = rng.sample(range(n_groups), n_groups)
        for first in range(0, n_groups, settings.batch_groups):
            batch = order[first : first + settings.batch_groups]
            loss = dpo_loss(
                sequence_logps(policy, data, batch), reference_logps[batch], data.scores[batch], settings.beta
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            if len(losses) % max(1, total_steps // 10) == 0:
                log.info(
                    "DPO step %d/%d loss %.3f, %.0f s",
                    len(losses),
                    total_steps,
                    loss.item(),
                    time.perf_counter() - start,
                )
    policy.eval()
    return losses


def preference_metrics(policy, reference, tokenizer, groups: list[RankedGroup], beta: float) -> dict[str, float]:
    """On ranked groups: eq. 7's loss, the pairwise accuracy of the implicit reward (ties one half, as the reward
    model's is measured) and its mean margin r(x, y_w) - r(x, y_l) over the preferred pairs."""
    data = encode_groups(tokenizer, groups, context_length(policy))
    rewards = implicit_rewards(all_sequence_logps(policy, data), all_sequence_logps(reference, data), beta)
    prefer = data.scores[:, :, None] > data.scores[:, None, :]
    margins = (rewards[:, :, None] - rewards[:, None, :])[prefer]
    return {
        "loss": ranking_loss(rewards, data.scores).item(),
        "pairwise_accuracy": pairwise_accuracy(rewards, data.scores),
        "mean_margin": margins.mean().item(),
        "pairs": int(prefer.sum()),
    }


def training_groups(settings: TextModelSettings) -> list[RankedGroup]:
    """The reward model's training groups (cache.training_ranked_groups on the same held-in sentences)."""
    return training_ranked_groups(settings, split_corpus(settings)[0])


def run_config(settings: DPOSettings) -> dict:
    """config.yaml in a run's shape: `algo` (the DPO settings), `env` (the group env=text_sentiment composes, so
    that the evaluator loads the default task, its base LM as the reference, and this folder's policy/), `seed`
    and `torch_threads` at the top level, as a run has them."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        env = compose(config_name=f"env/{ENV_GROUP}").env
    algo = {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("seed", "threads")}
    return {
        "algo": algo,
        "env": OmegaConf.to_container(env),
        "seed": settings.seed,
        "torch_threads": settings.threads,
    }


def write_run(out: Path, policy, tokenizer, config: dict, summary: dict) -> None:
    """<out>/policy (model and tokenizer), config.yaml, and summary.json last (a folder with it is complete)."""
    policy.save_pretrained(out / "policy")
    tokenizer.save_pretrained(out / "policy")
    yaml = OmegaConf.to_yaml(OmegaConf.create(config)).encode()
    atomic_write(out / "config.yaml", lambda f: f.write(yaml))
    atomic_write(out / "summary.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))


def run(settings: DPOSettings, out: Path) -> dict:
    """Train DPO on the default task's ranked comparisons into `out`; returns the summary."""
    require(not (out / "policy").exists(), f"{out} already holds a policy; choose another --out")
    config = run_config(settings)
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    models = TextModelSettings()
    paths = ensure_text_models(models)
    policy, tokenizer = load_causal_lm(paths.base_lm)
    reference, _ = load_causal_lm(paths.base_lm)
    reference.requires_grad_(False)
    groups = training_groups(models)
    start = time.perf_counter()
    losses = train_dpo(policy, reference, tokenizer, groups, settings)
    wall_s = time.perf_counter() - start
    heldout = heldout_ranked_groups(models, split_corpus(models)[1])
    steps_per_epoch = len(losses) // settings.epochs
    summary = {
        "algo": "dpo",
        "env": config["env"]["id"],
        "seed": settings.seed,
        "settings": dataclasses.asdict(settings),
        "train_groups": len(groups),
        "steps": len(losses),
        "wall_clock_s": round(wall_s, 1),
        "train_loss_last_epoch": sum(losses[-steps_per_epoch:]) / steps_per_epoch,
        "heldin": preference_metrics(policy, reference, tokenizer, groups[:MEASURED_GROUPS], settings.beta),
        "heldout": preference_metrics(policy, reference, tokenizer, heldout[:MEASURED_GROUPS], settings.beta),
        "reward_model_heldout_pairwise_accuracy": paths.metrics["rm_heldout_pairwise_accuracy"],
        "text_models": str(paths.folder),
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }
    write_run(out, policy, tokenizer, config, summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    defaults = DPOSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the run folder to write")
    parser.add_argument("--beta", type=float, default=defaults.beta)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--learning-rate", "--lr", type=float, default=defaults.learning_rate)
    parser.add_argument("--batch-groups", type=int, default=defaults.batch_groups, help="K-response groups per batch")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        settings = DPOSettings(
            beta=args.beta,
            epochs=args.epochs,
            learning_rate=args.learning_rate,
            batch_groups=args.batch_groups,
            seed=args.seed,
            threads=args.threads,
        )
        summary = run(settings, args.out)
    except ConfigError as err:
        print(f"tokengym: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
