"""The Hydra entry point shared by `python -m algos` and `python -m algos.<name>`."""

import dataclasses
import importlib
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from algos.common import ConfigError


CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def run_job(cfg: DictConfig) -> float:
    """Train one job; returns the final evaluation mean (the objective Hydra sweepers optimise)."""
    algo = importlib.import_module(f"algos.{cfg.algo.name}")
    try:
        summary = algo.train(cfg, Path(HydraConfig.get().runtime.output_dir))
    except ConfigError as err:
        print(f"tokengym: error: {err}", file=sys.stderr)
        sys.exit(2)
    return summary["eval"]["mean"]


def chosen_algos(overrides: list) -> list[str]:
    """The algorithms a command line selects: its `algo=` override (one value or a sweep) or the default."""
    chosen = [o for o in overrides if o.key_or_group == "algo"]
    if not chosen:
        defaults = OmegaConf.load(Path(CONF_DIR) / "config.yaml").defaults
        return [next(d.algo for d in defaults if isinstance(d, DictConfig) and "algo" in d)]
    if chosen[-1].is_sweep_override():
        return [str(v) for v in chosen[-1].sweep_iterator()]
    return [str(chosen[-1].value())]


def check_algo_keys(args: list[str]) -> None:
    """Name the valid hyperparameters when `algo.<key>=...` overrides a key the chosen algorithm lacks
    (Hydra's own message names the key but not the choices)."""
    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if "=" in a and not a.startswith("-")])
    except HydraException:
        return  # Hydra reports malformed overrides itself
    keys = [o.key_or_group.split(".")[1] for o in overrides
            if o.key_or_group.startswith("algo.") and not (o.is_add() or o.is_force_add())]
    for name in chosen_algos(overrides):
        if not keys or not Path(CONF_DIR, "algo", f"{name}.yaml").exists():
            continue  # an unknown algorithm name is Hydra's to report, with the choices
        valid = [f.name for f in dataclasses.fields(importlib.import_module(f"algos.{name}").Hyperparameters)]
        for key in keys:
            if key not in valid:
                sys.exit(f"tokengym: error: algo.{key} is not a hyperparameter of {name}; valid: {', '.join(valid)}")


def main(algo: str | None = None) -> None:
    """`algo` pins the algorithm when an algorithm file is run on its own (CleanRL style)."""
    if algo is not None:
        if any(arg.startswith("algo=") for arg in sys.argv[1:]):
            sys.exit(f"tokengym: error: python -m algos.{algo} trains {algo}; drop the algo= override "
                     f"or use python -m algos algo=...")
        sys.argv.insert(1, f"algo={algo}")
    check_algo_keys(sys.argv[1:])
    run_job()
