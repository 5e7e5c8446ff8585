"""Atari 2600 games on ale-py's vector env (`AtariVectorEnv`: the emulators step in C++ threads).

Preprocessing, as in Mnih et al. 2015 (Nature, Methods: "Preprocessing" and "Training details") and the PPO
Atari runs (Schulman et al. 2017; CleanRL ppo_atari): up to `noop_max` no-ops and FIRE (where the game has it)
at a game's start, each action repeated for 4 frames with the max over the last two, 84x84 grayscale, the last
4 frames stacked (N, 4, 84, 84) uint8. ale-py does all of this in C++. Our wrappers add, in this order:

0. `FireAfterLifeLoss`: FIRE on the step after a lost life, as SB3's and CleanRL's FireResetEnv press it at each
   lost life; ale-py presses it at a game's start only, so a Breakout ball would wait for the agent to fire.
1. `FullGameStatistics`: the raw score and length of whole games (all lives, unclipped) in
   info["final_info"]["episode"], the layout algos/rollout.py reads; this is what is logged and evaluated.
2. `TrainingSignal`, for training only: a lost life ends the episode for the value targets while the game goes
   on (Mnih et al. 2015's use of the life counter), and rewards are clipped to their sign. ale-py's own
   `episodic_life=True` restarts the whole game at every lost life instead, so a game would last one life; and
   its `reward_clipping` would hide the raw score; we leave both off.

Checked against gymnasium's Python wrappers (tests/test_atari.py): with no-ops and FireAfterLifeLoss off, the
observations, rewards,
terminations and final observations are identical to gym.make(..., frameskip=1, repeat_action_probability=0)
+ AtariPreprocessing + FrameStackObservation(padding_type="zero") for a fixed action sequence.
Differences from the Python wrapper stacks of SB3 and CleanRL: a game's first observation stacks zero frames
before its one real frame (gymnasium's default repeats that frame); ale-py takes 0 to noop_max - 1 no-ops
(those stacks take 1 to noop_max), one fewer where it presses FIRE; and the FIRE after a lost life is one
agent step seen by the learner (theirs is hidden inside a reset).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import ale_py
import gymnasium as gym
import numpy as np
from ale_py import roms
from ale_py.env import AtariEnv
from ale_py.vector_env import AtariVectorEnv
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorWrapper
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from core.checks import require
from core.errors import ConfigError
from core.info import VectorEnvSettings

gym.register_envs(ale_py)
ALE_ENTRY_POINT = "ale_py.env:AtariEnv"


@dataclass
class Settings(VectorEnvSettings):
    """kind "atari": `id` is an ALE id, e.g. ALE/Breakout-v5, which picks the game; the fields below do the rest
    (num_envs: emulators stepped together; normalize_reward is off, rewards are clipped instead)."""

    noop_max: int  # a game starts after a random number of no-ops below this (0: none)
    frame_skip: int  # frames per action; the observation is the max over the last two
    frame_stack: int  # frames stacked in one observation
    screen_size: int  # observations are screen_size x screen_size grayscale
    episodic_life: bool  # training only: a lost life ends the episode for the value targets; the game goes on
    clip_rewards: bool  # training only: rewards clipped to their sign
    repeat_action_probability: float  # sticky actions (Machado et al. 2018 suggest 0.25; 0 in the PPO papers)
    max_episode_frames: int  # a game is truncated after this many emulator frames (108000 = 30 minutes)
    fire_on_life_loss: bool  # the step after a lost life plays FIRE, whatever the agent chose (games with FIRE)
    num_threads: int  # emulator threads (0: ale-py's default)

    def __post_init__(self):
        super().__post_init__()
        for name in ("frame_skip", "frame_stack", "screen_size", "max_episode_frames"):
            require(getattr(self, name) > 0, f"env.{name}={getattr(self, name)} must be > 0")
        require(self.noop_max >= 0 and self.num_threads >= 0, "env.noop_max and env.num_threads must be >= 0")
        require(
            0.0 <= self.repeat_action_probability <= 1.0,
            f"env.repeat_action_probability={self.repeat_action_probability} must lie in [0, 1]",
        )


def ale_game(env_id: str) -> str:
    """The ROM name (e.g. 'breakout') of a registered ALE id, after a check that its ROM is there."""
    spec = gym.registry.get(env_id)
    if spec is None or spec.entry_point != ALE_ENTRY_POINT:
        ale_ids = [i for i, s in gym.registry.items() if s.entry_point == ALE_ENTRY_POINT and i.startswith("ALE/")]
        close = difflib.get_close_matches(env_id, ale_ids, n=5, cutoff=0.5)
        hint = f"close matches: {', '.join(close)}" if close else f"e.g. {', '.join(ale_ids[:3])}, ..."
        raise ConfigError(f"env.id={env_id!r} is not an Atari game id; {hint}")
    game = spec.kwargs["game"]
    try:
        found = roms.get_rom_path(game)
    except OSError as err:
        found, reason = None, str(err).splitlines()[0]
    else:
        reason = "ale-py does not know this ROM"
    if found is None:
        raise ConfigError(
            f"the ROM of {env_id} ({game}.bin) is missing or unreadable: {reason}. ale-py (>=0.9) "
            f"ships the ROMs: reinstall it, or point ALE_ROMS_DIR at a folder holding {game}.bin"
        )
    return game


class FireAfterLifeLoss(VectorWrapper):
    """The step after a lost life plays `fire_action` whatever the agent chose. That step's action has no effect
    on the game, so its policy-gradient term is zero in expectation; the learner is never stuck waiting to fire."""

    def __init__(self, env: gym.vector.VectorEnv, fire_action: int):
        super().__init__(env)
        self.fire_action = fire_action

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.lives, self.fire_due = info["lives"].copy(), np.zeros(self.num_envs, dtype=bool)
        return obs, info

    def step(self, actions):
        result = self.env.step(np.where(self.fire_due, self.fire_action, actions))
        lives = result[4]["lives"]
        self.fire_due, self.lives = lives < self.lives, lives.copy()
        return result


class FullGameStatistics(RecordEpisodeStatistics):
    """gymnasium's vector RecordEpisodeStatistics over whole games (below any life-loss or reward wrapper), its
    statistics moved to info["final_info"], where a SyncVectorEnv puts those of its environments' wrappers."""

    def step(self, actions):
        obs, rewards, terminated, truncated, info = super().step(actions)
        if "episode" in info:
            info["final_info"] = {"episode": info.pop("episode"), "_episode": info.pop("_episode")}
        return obs, rewards, terminated, truncated, info


class TrainingSignal(VectorWrapper):
    """What the learner sees: with `life_loss`, terminated=True when a life is lost, without a reset, so the game
    goes on (DeepMind's EpisodicLifeEnv); with `clip`, rewards clipped to their sign (Mnih et al. 2015).
    Evaluation turns both off.

    ale-py's vector env cannot save its emulators, so a resumed run restarts its games: the games in progress at
    the checkpoint are dropped unlogged, and there is no episode state to save (`state_dict` is empty).
    """

    def __init__(self, env: gym.vector.VectorEnv, life_loss: bool, clip: bool):
        super().__init__(env)
        self.life_loss, self.clip = life_loss, clip

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.lives = info["lives"].copy()
        return obs, info

    def step(self, actions):
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        if self.life_loss:
            # After a game over the emulator has already restarted, so its lives are not below the old count.
            terminated = terminated | (info["lives"] < self.lives)
        self.lives = info["lives"].copy()
        return obs, np.sign(rewards) if self.clip else rewards, terminated, truncated, info

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> bool:
        """ale-py cannot restore emulator states: the games restart, and False says so."""
        return False


class FireOnReset(gym.Wrapper):
    """FIRE for one frame after a reset, as ale-py's use_fire_reset does (Breakout waits for it)."""

    def __init__(self, env: gym.Env, fire_action: int):
        super().__init__(env)
        self.fire_action = fire_action

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        obs, _, _, _, info = self.env.step(self.fire_action)
        return obs, info


def action_meanings(env: gym.Env) -> list[str]:
    """The names of the game's actions (ALE ids are made by ale_py's AtariEnv)."""
    game = env.unwrapped
    assert isinstance(game, AtariEnv)
    return game.get_action_meanings()


def python_single_env(settings: Settings, video_folder: str | None = None) -> gym.Env:
    """One game through gymnasium's Python wrappers (AtariPreprocessing, FrameStackObservation): the same
    observations as make_vector_env's emulators (tests/test_atari.py checks it step by step with no-ops off).
    With `video_folder`, its first game is recorded frame by frame as MP4 there."""
    env = gym.make(
        settings.id,
        frameskip=1,
        repeat_action_probability=settings.repeat_action_probability,
        max_num_frames_per_episode=settings.max_episode_frames,
        render_mode="rgb_array" if video_folder else None,
    )
    if video_folder:
        env = gym.wrappers.RecordVideo(
            env, video_folder, episode_trigger=lambda episode: episode == 0, name_prefix="eval", fps=60
        )  # every emulator frame, at the console's rate
    actions = action_meanings(env)
    if "FIRE" in actions:
        env = FireOnReset(env, actions.index("FIRE"))
    env = gym.wrappers.AtariPreprocessing(
        env,
        noop_max=settings.noop_max,
        frame_skip=settings.frame_skip,
        screen_size=settings.screen_size,
        grayscale_obs=True,
    )
    return gym.wrappers.FrameStackObservation(env, settings.frame_stack, padding_type="zero")


def make_video_env(settings: Settings, video_folder: str) -> gym.vector.VectorEnv:
    """One evaluation game, recorded: the evaluation wrappers of make_vector_env over a Python-wrapped game
    (ale-py's vector env returns no screens to record)."""
    ale_game(settings.id)
    envs = SyncVectorEnv([lambda: python_single_env(settings, video_folder)], autoreset_mode=AutoresetMode.SAME_STEP)
    actions = action_meanings(envs.envs[0])
    return game_wrappers(envs, settings, actions.index("FIRE") if "FIRE" in actions else None, training=False)


def game_wrappers(
    envs: gym.vector.VectorEnv, settings: Settings, fire_action: int | None, training: bool
) -> gym.vector.VectorEnv:
    if settings.fire_on_life_loss and fire_action is not None:
        envs = FireAfterLifeLoss(envs, fire_action)
    return TrainingSignal(
        FullGameStatistics(envs), life_loss=training and settings.episodic_life, clip=training and settings.clip_rewards
    )


class SeedList(VectorWrapper):
    """Gymnasium's vector API takes one seed per sub-environment as a list of ints (equal seeds, equal starts: the
    group algorithms' grouped resets); ale-py's AtariVectorEnv takes them as an array."""

    def reset(self, *, seed=None, options=None):
        return self.env.reset(seed=np.asarray(seed) if isinstance(seed, list) else seed, options=options)


def make_vector_env(settings: Settings, num_envs: int, training: bool) -> gym.vector.VectorEnv:
    """Same-step autoreset: a finished game's last observation is in info['final_obs']. With `training=False`
    (evaluation) the episodes are whole games with raw rewards."""
    envs = AtariVectorEnv(
        ale_game(settings.id),
        num_envs,
        autoreset_mode=AutoresetMode.SAME_STEP,
        num_threads=settings.num_threads,
        noop_max=settings.noop_max,
        use_fire_reset=True,
        frameskip=settings.frame_skip,
        maxpool=True,
        stack_num=settings.frame_stack,
        img_height=settings.screen_size,
        img_width=settings.screen_size,
        grayscale=True,
        episodic_life=False,
        reward_clipping=False,
        repeat_action_probability=settings.repeat_action_probability,
        max_num_frames_per_episode=settings.max_episode_frames,
    )
    action_set = list(envs.ale.get_action_set())
    fire = ale_py.Action.FIRE
    return game_wrappers(SeedList(envs), settings, action_set.index(fire) if fire in action_set else None, training)
