"""The token-generation environment (DESIGN.md section 4): a task's prompt is the start of the observation,
each action appends one token, an episode ends at EOS (terminated) or after `max_new_tokens` (truncated), and
the task's reward of (prompt, completion) arrives on the last step only (InstructGPT; Stiennon et al. 2020).

The KL term to the reference model, -beta * (log pi(a|s) - log pi_ref(a|s)), is split to keep this
environment Markov and the algorithms generic: the environment reports the policy-independent part,
log pi_ref(a|s), as `info[REF_LOGPROB]`, and the shared rollout adds the penalty with a fixed or adaptive beta
for any environment that reports it (core/info.py, the env-to-rollout info protocol; beta from
`Settings.kl_penalty`).

`TokenEnv` is the single environment (`gymnasium.make("tokengym/Text-v0", ...)`); `TokenVectorEnv` steps a
batch of sequences together: one reference forward and one reward call per step for the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from core.checks import require
from core.devices import CPU, Placement
from core.errors import ConfigError
from core.info import METRICS, REF_LOGPROB, SAMPLES, KLPenalty, VectorEnvSettings
from envs.sequences import SequenceTask
from envs.text.sequences import text_sequence_task
from envs.text.tasks import TextTask, load_task, policy_model_of
from envs.text.tokens import PAD, encode_prompt

# transformers is imported by the functions that load models, so that reading the Settings does not load it


class TokenSequence(gym.spaces.Box):
    """Token ids of prompt + response so far, right-padded with -1. Knows the model its agent is built on, the
    model its critic starts from (None: a value head on the policy), and the task's corpus, the agent's
    pre-training text for PPO-ptx."""

    def __init__(
        self,
        max_len: int,
        vocab_size: int,
        policy_model: str | None = None,
        pretraining_texts: list[str] | None = None,
        value_model: str | None = None,
    ):
        super().__init__(low=PAD, high=vocab_size - 1, shape=(max_len,), dtype=np.int64)
        self.vocab_size, self.policy_model, self.pretraining_texts = vocab_size, policy_model, pretraining_texts
        self.value_model = value_model

    def build_agent(self, action_space: gym.Space, placement: Placement = CPU):
        from envs.text.agent import TextAgent

        if self.policy_model is None:
            raise ConfigError("this token space names no policy model; set env.policy_model")
        return TextAgent.from_pretrained(
            self.policy_model, self.vocab_size, self.pretraining_texts, self.value_model, placement
        )


class TokenBatch:
    """The mechanics both environments share: `n` sequences, each a sampled prompt plus generated tokens."""

    def __init__(self, task: TextTask, tokenizer, n: int, max_prompt_tokens: int, max_new_tokens: int, reference=None):
        self.task, self.tokenizer, self.reference = task, tokenizer, reference
        self.reference_cache = None
        if reference is not None:  # the reference's KV cache: one new token per row per step (envs/text/agent.py)
            from envs.text.agent import IncrementalDecoder

            self.reference_cache = IncrementalDecoder(reference)
        self.max_new_tokens, self.eos_id = max_new_tokens, tokenizer.eos_token_id
        self.prompt_ids = encode_prompts(task, tokenizer, max_prompt_tokens)
        self.tokens = np.full((n, max_prompt_tokens + max_new_tokens), PAD, dtype=np.int64)
        self.lengths = np.zeros(n, dtype=np.int64)
        self.prompt_lengths = np.zeros(n, dtype=np.int64)
        self.prompt_index = np.zeros(n, dtype=np.int64)
        self.placement = CPU  # where the reference model runs (TokenVectorEnv.place)

    def start(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        for row in rows:
            i = int(rng.integers(len(self.prompt_ids)))
            ids = self.prompt_ids[i]
            self.tokens[row] = PAD
            self.tokens[row, : len(ids)] = ids
            self.lengths[row] = self.prompt_lengths[row] = len(ids)
            self.prompt_index[row] = i

    def restart_reference_cache(self) -> None:
        if self.reference_cache is not None:
            self.reference_cache.reset()

    @torch.no_grad()
    def reference_logprobs(self, actions: np.ndarray) -> np.ndarray:
        """log pi_ref(a|s) for every row, from one incremental step of the reference model over the batch (a row
        that is not its last step's plus one token, a new prompt, has its prefix run once first)."""
        assert self.reference_cache is not None  # made with the reference
        device = self.placement.device
        with self.placement.autocast():
            logits = self.reference_cache.step(torch.as_tensor(self.tokens, device=device)).logits[:, -1]
        logp = torch.log_softmax(logits.float(), -1)
        return logp.gather(-1, torch.as_tensor(actions, device=device).long()[:, None]).squeeze(-1).cpu().numpy()

    def append(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Write each row's token; returns (terminated: EOS, truncated: response limit reached)."""
        rows = np.arange(len(actions))
        self.tokens[rows, self.lengths] = actions
        self.lengths += 1
        terminated = actions == self.eos_id
        truncated = ~terminated & (self.lengths - self.prompt_lengths >= self.max_new_tokens)
        return terminated, truncated

    def texts(self, rows: np.ndarray) -> tuple[list[str], list[str]]:
        """(prompts, completions) of `rows`; the completion excludes its EOS."""
        prompts = [self.task.prompts[i] for i in self.prompt_index[rows]]
        completions = []
        for row in rows:
            generated = self.tokens[row, self.prompt_lengths[row] : self.lengths[row]]
            completions.append(
                self.tokenizer.decode(generated[generated != self.eos_id].tolist(), skip_special_tokens=True)
            )
        return prompts, completions

    def score(self, rows: np.ndarray) -> np.ndarray:
        return self.task.checked_scores(*self.texts(rows))


def encode_prompts(task: TextTask, tokenizer, max_prompt_tokens: int) -> list[list[int]]:
    """`<bos>` + prompt ids for every prompt (envs/text/tokens.py); an empty list or an over-long prompt is a
    clear error."""
    require(len(task.prompts) > 0, f"task {task.name!r} has no prompts; give it at least one")
    encoded = [encode_prompt(tokenizer, p) for p in task.prompts]
    for i, ids in enumerate(encoded):
        require(
            0 < len(ids) <= max_prompt_tokens,
            f"prompt {i} of task {task.name!r} ({task.prompts[i][:60]!r}) is {len(ids)} tokens, more than "
            f"env.max_prompt_tokens={max_prompt_tokens}; shorten it or raise env.max_prompt_tokens"
            if ids
            else f"prompt {i} of task {task.name!r} encodes to no tokens; remove it",
        )
    return encoded


class TokenEnv(gym.Env):
    """One sequence. Reward: the task's score of (prompt, completion) on the last step, 0 before.

    `gymnasium.make("tokengym/Text-v0")` with no arguments is the default task (envs/text/sentiment.py) on its cached
    models (built on first use): the base LM's tokenizer, and the base LM as the reference whose log-probabilities
    each step reports. The prompt and response limits are those of conf/env/text_sentiment.yaml."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        task: TextTask | None = None,
        tokenizer=None,
        max_prompt_tokens: int = 24,
        max_new_tokens: int = 24,
        reference=None,
        policy_model: str | None = None,
    ):
        if task is None:
            task, tokenizer, reference, policy_model = _default_task()
        if tokenizer is None:
            raise ConfigError(f"TokenEnv: task {task.name!r} was given without its tokenizer; pass tokenizer=...")
        self.batch = TokenBatch(task, tokenizer, 1, max_prompt_tokens, max_new_tokens, reference)
        self.observation_space = TokenSequence(self.batch.tokens.shape[1], len(tokenizer), policy_model)
        self.action_space = gym.spaces.Discrete(len(tokenizer))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.batch.start(np.array([0]), self.np_random)
        return self.batch.tokens[0].copy(), {}

    def begin_batch(self) -> None:
        """As TokenVectorEnv.begin_batch, for this env inside one of Gymnasium's vector envs (core/info.py)."""
        self.batch.restart_reference_cache()

    def step(self, action):
        actions = np.array([int(action)])
        info = {REF_LOGPROB: float(self.batch.reference_logprobs(actions)[0])} if self.batch.reference else {}
        terminated, truncated = self.batch.append(actions)
        done = bool(terminated[0] or truncated[0])
        reward = float(self.batch.score(np.array([0]))[0]) if done else 0.0
        return self.batch.tokens[0].copy(), reward, bool(terminated[0]), bool(truncated[0]), info


def _default_task() -> tuple[TextTask, object, object, str]:
    """(task, tokenizer, reference model, policy model) of the default text task."""
    from envs.text.loading import load_causal_lm

    task = load_task("sentiment", None)
    policy_model = policy_model_of(task, None)
    reference, tokenizer = load_causal_lm(policy_model)
    return task, tokenizer, reference, policy_model


class TokenVectorEnv(gym.vector.VectorEnv):
    """`num_envs` sequences stepped together, with same-step autoreset (a finished row's last observation in
    info['final_obs']) and episode statistics in RecordEpisodeStatistics' format (info['final_info'])."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        task: TextTask,
        tokenizer,
        num_envs: int,
        max_prompt_tokens: int,
        max_new_tokens: int,
        reference=None,
        policy_model: str | None = None,
        gold=None,
        value_model: str | None = None,
        reward_transform=None,
    ):
        self.num_envs, self.gold = num_envs, gold
        self.reward_transform = reward_transform  # (prompt indices, task rewards) -> rewards; envs/text/quantile.py
        self.batch = TokenBatch(task, tokenizer, num_envs, max_prompt_tokens, max_new_tokens, reference)
        self.single_observation_space = TokenSequence(
            self.batch.tokens.shape[1], len(tokenizer), policy_model, task.corpus, value_model
        )
        self.single_action_space = gym.spaces.Discrete(len(tokenizer))
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

    def place(self, placement: Placement) -> None:
        """Run the reference model (in `placement`'s precision) and the task's reward models on its device; the
        rewards stay float32, as the task computes them."""
        if self.batch.reference is not None:
            self.batch.reference.to(placement.device)
        for model in self.batch.task.models:
            model.to(placement.device)
        self.batch.placement = placement

    def begin_batch(self) -> None:
        """The rollout starts a batch (core/info.py): the reference's KV cache restarts from the sequences as they
        are, so that a run resumed from a checkpoint computes what the uninterrupted run computed."""
        self.batch.restart_reference_cache()

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        """`seed`: one for the whole batch, or one per row, as Gymnasium's vector envs take them: rows reset with
        equal seeds start from the same prompt (the group algorithms' groups); later prompts come from a stream
        seeded by all of them."""
        if isinstance(seed, list | tuple | np.ndarray):
            require(len(seed) == self.num_envs, f"reset got {len(seed)} seeds for {self.num_envs} rows")
            for row, row_seed in enumerate(seed):
                self.batch.start(np.array([row]), np.random.default_rng(int(row_seed)))
            self._np_random = np.random.default_rng([int(s) for s in seed])
            return self.batch.tokens.copy(), {}
        if seed is not None:
            self._np_random = np.random.default_rng(seed)
        self.batch.start(np.arange(self.num_envs), self.np_random)
        return self.batch.tokens.copy(), {}

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.int64)
        info: dict = {}
        if self.batch.reference is not None:
            info[REF_LOGPROB] = self.batch.reference_logprobs(actions)
        terminated, truncated = self.batch.append(actions)
        done = terminated | truncated
        rewards = np.zeros(self.num_envs)
        if done.any():
            rows = np.flatnonzero(done)
            proxy = np.zeros(self.num_envs)
            proxy[rows] = self.batch.score(rows)
            rewards[rows] = proxy[rows]
            if self.reward_transform is not None:
                index = self.batch.prompt_index
                rewards[rows] = self.reward_transform(index[rows], proxy[rows], in_progress=index)
            info.update(self._final_info(rows, done, rewards, proxy))
            self.batch.start(rows, self.np_random)
        return self.batch.tokens.copy(), rewards, terminated, truncated, info

    def _final_info(self, rows: np.ndarray, done: np.ndarray, rewards: np.ndarray, proxy: np.ndarray) -> dict:
        final_obs = np.empty(self.num_envs, dtype=object)
        for row in rows:
            final_obs[row] = self.batch.tokens[row].copy()
        lengths = self.batch.lengths - self.batch.prompt_lengths
        episode = {"r": np.where(done, rewards, 0.0), "l": np.where(done, lengths, 0)}
        final_info: dict[str, Any] = {
            "episode": episode,
            "_episode": done.copy(),
            SAMPLES: np.empty(self.num_envs, dtype=object),
            f"_{SAMPLES}": done.copy(),
        }
        for row, prompt, completion in zip(rows, *self.batch.texts(rows)):
            final_info[SAMPLES][row] = f"{prompt} -> {completion}"
        if self.gold is not None:
            gold = np.zeros(self.num_envs)
            gold[rows] = self.gold(*self.batch.texts(rows))
            final_info[METRICS] = {"text/gold_reward": gold, "text/proxy_reward": proxy}
            final_info[f"_{METRICS}"] = done.copy()
        return {"final_obs": final_obs, "_final_obs": done.copy(), "final_info": final_info, "_final_info": done.copy()}

    def state_dict(self) -> dict:
        b = self.batch
        return {
            "tokens": torch.from_numpy(b.tokens.copy()),
            "lengths": torch.from_numpy(b.lengths.copy()),
            "prompt_lengths": torch.from_numpy(b.prompt_lengths.copy()),
            "prompt_index": torch.from_numpy(b.prompt_index.copy()),
            "rng": self.np_random.bit_generator.state,
            "reward_transform": self.reward_transform.state_dict() if self.reward_transform is not None else None,
        }

    def load_state_dict(self, state: dict) -> bool:
        """Restores every sequence in progress (True: the episodes continue)."""
        b = self.batch
        b.tokens, b.lengths = state["tokens"].numpy().copy(), state["lengths"].numpy().copy()
        b.prompt_lengths, b.prompt_index = state["prompt_lengths"].numpy().copy(), state["prompt_index"].numpy().copy()
        self.np_random.bit_generator.state = state["rng"]
        if self.reward_transform is not None:
            self.reward_transform.load_state_dict(state["reward_transform"])
        return True


# gymnasium's EnvCreator protocols ask for callables taking only **kwargs; it calls the entry points with keywords
gym.register(
    id="tokengym/Text-v0",
    entry_point=TokenEnv,  # type: ignore[arg-type]
    vector_entry_point=TokenVectorEnv,  # type: ignore[arg-type]
)


# ------------------------------------------------------------------------------------------- the `text` env kind
@dataclass
class Settings(VectorEnvSettings):
    """kind "text"; `id` is tokengym/Text-v0, the registered Gymnasium id; `num_envs` sequences are generated
    together."""

    task: str  # a registered task name, or "path/to/file.py:factory" / "module:factory"
    policy_model: str | None  # causal LM name or folder; null: the task's default (e.g. the project's base LM)
    reference_model: str | None  # frozen reference for the KL term; null: the policy's initial weights
    value_model: str | None  # sequence classifier the critic starts from, or "reward_model"; null: policy's head
    max_prompt_tokens: int
    max_new_tokens: int
    kl_coef: float  # beta of the KL penalty to the reference (initial value when adaptive)
    kl_target: float | None  # per-sequence KL target in nats for the adaptive controller; null: fixed beta
    kl_horizon: int  # the adaptive controller's horizon (Ziegler et al. 2019), in environment steps
    bootstrap_truncated: bool  # false: the response limit is part of the task, its reward is final
    # M: vBoN's reward log F(r) from M reference samples per prompt (envs/text/quantile.py); None: the task's r.
    # A default, so that the config.yaml of a run made before the setting existed still loads.
    quantile_reward_samples: int | None = None

    def __post_init__(self):
        super().__post_init__()
        for name in ("max_prompt_tokens", "max_new_tokens", "kl_horizon"):
            require(getattr(self, name) > 0, f"env.{name}={getattr(self, name)} must be > 0")
        require(self.kl_coef >= 0, f"env.kl_coef={self.kl_coef} must be >= 0")
        require(self.kl_target is None or self.kl_target > 0, f"env.kl_target={self.kl_target} must be > 0")
        require(
            self.quantile_reward_samples is None or self.quantile_reward_samples >= 1,
            f"env.quantile_reward_samples={self.quantile_reward_samples} must be >= 1 (reference samples per "
            "prompt; 16 or more for a usable CDF) or null for the task's own reward",
        )

    def kl_penalty(self) -> KLPenalty | None:
        """The penalty to the reference model, whenever kl_coef > 0 (fixed beta, or adaptive with kl_target)."""
        if self.kl_coef > 0:
            return KLPenalty(coef=self.kl_coef, target=self.kl_target, horizon=self.kl_horizon)
        return None

    def bootstraps_truncation(self) -> bool:
        return self.bootstrap_truncated


def make_vector_env(settings: Settings, num_envs: int, training: bool) -> TokenVectorEnv:
    """For training, the reference model is loaded and its log-probabilities reported (core/info.py: the KL penalty
    in the reward, where env.kl_coef > 0, or the KL term of a loss such as GRPO's); with
    env.quantile_reward_samples, training rewards are vBoN's log-quantiles (envs/text/quantile.py), while evaluation
    envs keep the task's reward, the figure every method is compared on."""
    from envs.text.loading import load_causal_lm, require_same_vocabulary

    task = load_task(settings.task, settings)
    policy_model = policy_model_of(task, settings.policy_model)
    reference, tokenizer = load_causal_lm(settings.reference_model or policy_model)
    if settings.reference_model and settings.reference_model != policy_model:
        require_same_vocabulary(load_causal_lm(policy_model)[1], tokenizer)
    context = getattr(reference.config, "n_positions", None) or reference.config.max_position_embeddings
    length = settings.max_prompt_tokens + settings.max_new_tokens
    require(
        length <= context,
        f"env.max_prompt_tokens + env.max_new_tokens = {length} is more than the model's "
        f"context of {context} tokens; lower them",
    )
    quantile = None
    if training and settings.quantile_reward_samples:
        from envs.text.quantile import ReferenceQuantileReward

        quantile = ReferenceQuantileReward(
            task, reference, tokenizer, settings.quantile_reward_samples, settings.max_new_tokens
        )
    return TokenVectorEnv(
        task,
        tokenizer,
        num_envs,
        settings.max_prompt_tokens,
        settings.max_new_tokens,
        reference=reference if training else None,  # ref_logprob for the KL in the reward or in a loss
        policy_model=str(policy_model),
        gold=task.gold,
        value_model=value_model_of(settings, task),
        reward_transform=quantile,
    )


def value_model_of(settings: Settings, task: TextTask) -> str | None:
    """The folder or name a separate critic starts from: env.value_model, where "reward_model" is the task's own."""
    if settings.value_model != "reward_model":
        return settings.value_model
    require(
        task.reward_model is not None,
        f"env.value_model=reward_model, but task {task.name!r} has no learned "
        f"reward model; name a sequence classifier, or set env.value_model=null",
    )
    return str(task.reward_model)


def sequence_task(settings: Settings) -> SequenceTask:
    """The task's corpus as whole-sequence data for algo=seqgan (envs/text/sequences.py), each sequence as long
    as a prompt plus a response."""
    task = load_task(settings.task, settings)
    return text_sequence_task(task, settings.policy_model, settings.max_prompt_tokens + settings.max_new_tokens)
