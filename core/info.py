"""The env-to-rollout info protocol: what an environment may report beyond Gymnasium's own keys, and the tags
the rollout logs it under. The shared rollout (algos/rollout.py) reads only these; no algorithm reads them.

Per step, in `info` (arrays over the vector env's sub-environments):
    REF_LOGPROB    log pi_ref(a_t | s_t) of a frozen reference policy. The rollout then adds the KL penalty
                   -beta * (log pi - log pi_ref) to the reward (DESIGN.md section 4), with beta from the env's
                   `KLPenalty` settings, and logs each finished episode's summed KL under KL_TAG and beta
                   under KL_COEF_TAG.
At an episode's end, in `info["final_info"]` (each with its `_<key>` mask, as Gymnasium's vector envs give):
    "episode"      RecordEpisodeStatistics' raw return and length (charts/episodic_return, _length).
    METRICS        {tag: values}: per-episode scalars, each logged as its mean under its own tag
                   (the text env's text/gold_reward and text/proxy_reward).
    SAMPLES        a printable sample of the finished episode (the text env's prompt -> completion), the
                   latest few logged as TensorBoard text under SAMPLES_TAG.
And one call the other way: a vector env, or an env inside Gymnasium's SyncVectorEnv, may define `begin_batch()`,
which the rollout calls as each batch of rollouts starts (`begin_batch` below). Checkpoints fall between batches,
so state an env restarts there (the text env's KV cache of the reference model) is computed alike by a run and by
the same run resumed.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import ConfigError

REF_LOGPROB = "ref_logprob"
METRICS = "metrics"
SAMPLES = "samples"

KL_TAG = "text/kl"
KL_COEF_TAG = "text/kl_coef"
SAMPLES_TAG = "text/samples"


def begin_batch(envs: object) -> None:
    """A batch of rollouts starts: tell an env that wants to know (see the module's docstring), the vector env
    itself or, inside Gymnasium's SyncVectorEnv, each of its environments."""
    for env in [envs, *(sub.unwrapped for sub in getattr(envs, "envs", ()))]:
        if hasattr(env, "begin_batch"):
            env.begin_batch()


@dataclass
class KLPenalty:
    """beta of the per-step penalty -beta * (log pi - log pi_ref), for envs that report REF_LOGPROB: fixed, or
    adapted toward `target` nats per sequence over `horizon` environment steps (Ziegler et al. 2019)."""

    coef: float
    target: float | None
    horizon: int


@dataclass
class EnvSettings:
    """The settings every env kind has (conf/env/*.yaml); a kind's own Settings adds its fields."""

    kind: str  # the env kind (envs/__init__.py, KINDS)
    id: str  # the environment's Gymnasium id, or a name for run folders and checkpoints


@dataclass
class VectorEnvSettings(EnvSettings):
    """The settings of a kind with step-by-step vector environments, which the rollout reads; a kind overrides
    the two methods where the rollout must treat it differently."""

    num_envs: int  # environments stepped together in one vector env
    normalize_reward: bool  # divide rewards by the running std of the discounted return

    def __post_init__(self):
        if self.num_envs <= 0:
            raise ConfigError(f"env.num_envs={self.num_envs} must be > 0")

    def kl_penalty(self) -> KLPenalty | None:
        """The KL penalty the rollout adds for an env that reports REF_LOGPROB; None: no penalty."""
        return None

    def bootstraps_truncation(self) -> bool:
        """Whether a time-limit truncation is bootstrapped with gamma * V(final observation). False for envs
        whose limit is part of the task (the text env's response limit, where the final reward is paid)."""
        return True
