"""Golden runs: short seeded runs whose final parameters are pinned by a hash of every tensor, so that a change
meant to keep behaviour (a refactor, a new device option) provably keeps it bit for bit on the CPU.

The hashes in tests/golden_hashes.json were written by the code before the architecture refactor, per CPU
instruction set that torch's kernels dispatch to (torch.backends.cpu.get_cpu_capability(): AVX512 and AVX2 round
differently) and, within one, per CPU model (an AMD EPYC with AVX512 rounds unlike the machine that pinned the
first AVX512 set): a run passes when it matches any set pinned for its instruction set. They hold for the torch
version recorded there (floating-point kernels change between releases); under another version or on a CPU with no
pinned set the test skips and says so. Each set was first written by the code before a change and then checked
against the code after it. To pin this CPU model's set (after a deliberate change of behaviour, or on a new model):
`python -m tests.test_golden`.
"""

import hashlib
import importlib
import json
import platform
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import compose_config

GOLDEN = Path(__file__).with_name("golden_hashes.json")
EXAMPLE_TASK = "env.task=examples/terse_task.py:make_task"
SEQGAN_TINY = [
    "env.num_eval=64",
    "env.num_real=256",
    "algo.batch_size=32",
    "algo.dis_filter_sizes=[2,3]",
    "algo.dis_num_filters=[8,8]",
    "algo.rollout_num=2",
    "algo.eval_every=1",
    "algo.num_negatives=64",
    "algo.pretrain_epochs=1",
    "algo.dis_pretrain_rounds=1",
    "algo.adversarial_epochs=1",
]

# name -> (algorithm, overrides); the text run also names the tiny LM folder (tests/conftest.py's tiny_lm).
RUNS = {
    **{
        f"{algo}-cartpole": (algo, ["env=cartpole", "total_timesteps=2048", "algo.num_steps=64", "eval_episodes=2"])
        for algo in ("pg", "a2c", "trpo", "ppo_penalty", "ppo_clip")
    },
    "ppo_clip-breakout": (
        "ppo_clip",
        [
            "env=breakout",
            "total_timesteps=2048",
            "env.num_envs=4",
            "algo.num_steps=64",
            "eval_episodes=1",
            "env.max_episode_frames=2000",
        ],
    ),
    "ppo_clip-text": (
        "ppo_clip",
        [
            "env=text",
            EXAMPLE_TASK,
            "env.num_envs=4",
            "env.max_new_tokens=4",
            "env.max_prompt_tokens=8",
            "algo.num_steps=8",
            "total_timesteps=128",
            "eval_episodes=2",
        ],
    ),
    **{
        f"{algo}-cartpole": (
            algo,
            ["env=cartpole", "env.num_envs=16", "algo.group_size=4", "total_timesteps=2048", "eval_episodes=2"],
        )
        for algo in ("grpo", "rloo")
    },
    "seqgan-oracle": ("seqgan", ["env=seqgan_oracle", *SEQGAN_TINY]),
}


def parameter_hash(checkpoint: dict) -> str:
    """sha256 over every tensor of the trained networks, name and bytes, in sorted order."""
    tensors = checkpoint.get("agent") or checkpoint["modules"]["generator"]
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def run_hash(name: str, run_dir: Path, tiny_lm: Path) -> str:
    algo, overrides = RUNS[name]
    extra = [f"env.policy_model={tiny_lm}"] if name.endswith("-text") else []
    cfg = compose_config(f"algo={algo}", "seed=1", f"run_root={run_dir}", *overrides, *extra)
    importlib.import_module(f"algos.{algo}").train(cfg, run_dir)
    return parameter_hash(torch.load(run_dir / "checkpoint.pt", weights_only=True))


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or "unknown CPU"


def pinned() -> list[dict]:
    """Every set of hashes pinned for this CPU's instruction set (one per CPU model that pinned one)."""
    golden, capability = json.loads(GOLDEN.read_text()), torch.backends.cpu.get_cpu_capability()
    if golden["torch"] != torch.__version__:
        pytest.skip(f"golden hashes were pinned under torch {golden['torch']}, this is {torch.__version__}")
    if capability not in golden["hashes"]:
        pytest.skip(f"no golden hashes for this CPU's kernels ({capability}); pinned: {', '.join(golden['hashes'])}")
    return list(golden["hashes"][capability].values())


@pytest.mark.parametrize("name", RUNS)
def test_a_short_seeded_run_ends_with_the_pinned_parameters(name, tiny_lm, tmp_path):
    pins = {hashes[name] for hashes in pinned() if name in hashes}
    if not pins:  # a deliberate change re-pinned it on another CPU's kernels only
        pytest.skip(f"{name} has no pin for this CPU's kernels; re-pin with python -m tests.test_golden")
    assert run_hash(name, tmp_path, tiny_lm) in pins


if __name__ == "__main__":  # re-pin: python -m tests.test_golden
    import tempfile

    from tests.conftest import make_tiny_lm

    with tempfile.TemporaryDirectory() as tmp:
        lm = make_tiny_lm(Path(tmp) / "tiny-lm")
        hashes = {name: run_hash(name, Path(tmp) / name, lm) for name in RUNS}
    golden = json.loads(GOLDEN.read_text())
    if golden["torch"] != torch.__version__:  # other torch versions' sets no longer apply
        golden = {"torch": torch.__version__, "hashes": {}}
    golden["hashes"].setdefault(torch.backends.cpu.get_cpu_capability(), {})[cpu_model()] = hashes
    GOLDEN.write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps(hashes, indent=2), file=sys.stderr)
