"""The `seqgan_oracle` env kind: the synthetic-data experiment of the SeqGAN paper (Yu et al. 2017, section
"Synthetic Data Experiments"). A fixed random LSTM, the oracle, stands in for the real world: its samples are
the real data, and a generator is scored by NLL-oracle, the oracle's mean per-token negative log-likelihood of
the generator's samples (the paper's Table 1). ../shared/data/seqgan-oracle/README.md describes the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.checks import require
from core.errors import ConfigError
from core.info import EnvSettings
from envs.sequences import LSTMLanguageModel, SequenceTask, diversity_metrics, generate, token_nll

# target_lstm.py's parameter order: embedding; input, forget, output gate and candidate cell, each as
# (input->gate, hidden->gate, bias); output projection. Matrices are used as x @ W.
ORACLE_LAYOUT = {
    "g_embeddings": ("V", "E"),
    "Wi": ("E", "H"),
    "Ui": ("H", "H"),
    "bi": ("H",),
    "Wf": ("E", "H"),
    "Uf": ("H", "H"),
    "bf": ("H",),
    "Wog": ("E", "H"),
    "Uog": ("H", "H"),
    "bog": ("H",),
    "Wc": ("E", "H"),
    "Uc": ("H", "H"),
    "bc": ("H",),
    "Wo": ("H", "V"),
    "bo": ("V",),
}
LAYOUT_HELP = (
    "an .npz with float arrays "
    + ", ".join(f"{k} {'x'.join(v)}" for k, v in ORACLE_LAYOUT.items())
    + " (V vocabulary, E embedding, H hidden; the SeqGAN repository's save/target_params.pkl as npz: "
    "../shared/data/seqgan-oracle/target_params.npz)"
)


DEFAULT_ORACLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "seqgan-oracle" / "target_params.npz"


@dataclass
class Settings(EnvSettings):
    """kind "seqgan_oracle"; `id` names run folders and checkpoints."""

    oracle_path: str | None  # the oracle's parameters (npz, layout in ORACLE_LAYOUT); null: DEFAULT_ORACLE
    num_real: int  # oracle samples used as the real data (paper: 10,000)
    length: int  # sequence length (paper: 20)
    start_token: int  # the first input of every sequence (paper: 0)
    num_eval: int  # generated samples NLL-oracle is measured on (paper: 10,000)
    data_seed: int  # seed of the real data, fixed across runs so seeds vary only the learner

    def __post_init__(self):
        for name in ("num_real", "length", "num_eval"):
            require(getattr(self, name) > 0, f"env.{name}={getattr(self, name)} must be > 0")


def load_oracle(path: str | Path, start_token: int) -> LSTMLanguageModel:
    """The oracle as an LSTMLanguageModel. Its equations are torch's LSTM with the gates stacked in torch's
    order (input, forget, cell, output) and the matrices transposed; torch's second bias is zero."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"oracle file {path} not found; env.oracle_path must name {LAYOUT_HELP}")
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as err:
        raise ConfigError(f"oracle file {path} is not a readable npz ({err}); expected {LAYOUT_HELP}") from None
    sizes = _check_layout(arrays, path)
    oracle = LSTMLanguageModel(sizes["V"], sizes["E"], sizes["H"], start_token)
    t = {k: torch.from_numpy(np.asarray(arrays[k], dtype=np.float32)) for k in ORACLE_LAYOUT}
    with torch.no_grad():
        oracle.embedding.weight.copy_(t["g_embeddings"])
        # torch's LSTM makes its per-layer parameters (weight_ih_l0, ...) at run time; its annotations lack them
        oracle.lstm.weight_ih_l0.copy_(torch.cat([t["Wi"], t["Wf"], t["Wc"], t["Wog"]], 1).T)  # type: ignore[operator]
        oracle.lstm.weight_hh_l0.copy_(torch.cat([t["Ui"], t["Uf"], t["Uc"], t["Uog"]], 1).T)  # type: ignore[operator]
        oracle.lstm.bias_ih_l0.copy_(torch.cat([t["bi"], t["bf"], t["bc"], t["bog"]]))  # type: ignore[operator]
        oracle.lstm.bias_hh_l0.zero_()  # type: ignore[operator]
        oracle.head.weight.copy_(t["Wo"].T)
        oracle.head.bias.copy_(t["bo"])
    require(start_token < sizes["V"], f"env.start_token={start_token} is outside the oracle's {sizes['V']} tokens")
    return oracle.eval().requires_grad_(False)


def _check_layout(arrays: dict, path: Path) -> dict[str, int]:
    missing = [k for k in ORACLE_LAYOUT if k not in arrays]
    if missing:
        raise ConfigError(f"oracle file {path} lacks {', '.join(missing)}; expected {LAYOUT_HELP}")
    sizes: dict[str, int] = {}
    for key, dims in ORACLE_LAYOUT.items():
        shape = arrays[key].shape
        if len(shape) != len(dims) or not np.issubdtype(arrays[key].dtype, np.floating):
            raise ConfigError(
                f"oracle file {path}: {key} has shape {shape} and dtype {arrays[key].dtype}, "
                f"expected a float array {'x'.join(dims)}; expected {LAYOUT_HELP}"
            )
        for dim, size in zip(dims, shape):
            if sizes.setdefault(dim, size) != size:
                raise ConfigError(
                    f"oracle file {path}: {key} has shape {shape}, which disagrees with "
                    f"{dim}={sizes[dim]} from the arrays before it; expected {LAYOUT_HELP}"
                )
    return sizes


def sequence_task(settings: Settings) -> SequenceTask:
    oracle = load_oracle(settings.oracle_path or DEFAULT_ORACLE, settings.start_token)
    with torch.random.fork_rng():
        torch.manual_seed(settings.data_seed)
        real = generate(oracle, settings.num_real, settings.length)

    def metrics(samples: torch.Tensor) -> dict[str, float]:
        return {"nll_oracle": token_nll(oracle, samples).mean().item(), **diversity_metrics(samples[:2000].tolist())}

    return SequenceTask(
        name="seqgan_oracle",
        real=real,
        vocab_size=oracle.head.out_features,
        start_token=settings.start_token,
        metrics=metrics,
        headline="nll_oracle",
        lower_is_better=True,
        num_eval=settings.num_eval,
    )
