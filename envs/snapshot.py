"""Save and restore the state of a vector env of pure-Python environments as plain data, so a resumed run
continues every episode exactly where it stopped and checkpoints load with `torch.load(weights_only=True)`.

Every layer of every sub-environment's wrapper chain (and the vector env itself) contributes its attributes
whose values are numbers, strings, None, numpy arrays or scalars (kept with their dtype), and its random
generator's state. Attributes of other types (deques of past statistics, spaces, specs) are not episode state
and are left alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

PLAIN = (bool, int, float, str, type(None))


def _encode(value):
    """Plain data that torch's weights-only loader accepts, or None when the value is not episode state."""
    if isinstance(value, np.generic):  # before PLAIN: numpy's float64 is a float, which the loader would refuse
        return {"scalar": torch.from_numpy(np.asarray(value).copy())}
    if isinstance(value, PLAIN):
        return {"plain": value}
    if isinstance(value, np.ndarray) and value.dtype != object:
        return {"array": torch.from_numpy(value.copy())}
    return None


def _decode(encoded):
    if "plain" in encoded:
        return encoded["plain"]
    if "array" in encoded:
        return encoded["array"].numpy().copy()
    return encoded["scalar"].numpy()[()]


def _layers(env) -> list:
    layers = [env]
    while hasattr(layers[-1], "env"):
        layers.append(layers[-1].env)
    return layers


def _layer_state(layer) -> dict:
    state: dict[str, Any] = {"attrs": {}}
    for name, value in vars(layer).items():
        encoded = _encode(value)
        if encoded is not None:
            state["attrs"][name] = encoded
    rng = vars(layer).get("_np_random")
    if isinstance(rng, np.random.Generator):
        state["rng"] = rng.bit_generator.state
    return state


def _restore_layer(layer, state: dict) -> None:
    for name, encoded in state["attrs"].items():
        setattr(layer, name, _decode(encoded))
    if "rng" in state:
        layer._np_random.bit_generator.state = state["rng"]


def vector_env_state(envs) -> dict:
    """The state of a SyncVectorEnv and of every layer of each of its environments; a vector env with a
    `state_dict` of its own (the token env) gives that instead."""
    if hasattr(envs, "state_dict"):
        return envs.state_dict()
    return {"vector": _layer_state(envs), "envs": [[_layer_state(layer) for layer in _layers(e)] for e in envs.envs]}


def restore_vector_env_state(envs, state: dict) -> bool:
    """Whether the episodes in progress were restored; an env whose own `load_state_dict` cannot (ale-py's
    emulators) returns False, and its episodes restart from the reset it had at construction."""
    if hasattr(envs, "load_state_dict"):
        return envs.load_state_dict(state)
    if len(state["envs"]) != len(envs.envs):
        raise ValueError(f"the checkpoint holds {len(state['envs'])} environments, this run has {len(envs.envs)}")
    _restore_layer(envs, state["vector"])
    for env, layer_states in zip(envs.envs, state["envs"]):
        layers = _layers(env)
        if len(layers) != len(layer_states):
            raise ValueError("the checkpoint's environments are wrapped differently from this run's")
        for layer, layer_state in zip(layers, layer_states):
            _restore_layer(layer, layer_state)
    return True
