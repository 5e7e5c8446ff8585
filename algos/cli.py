"""The Hydra entry point shared by `python -m algos` and `python -m algos.<name>`."""

import dataclasses
import importlib
import signal
import sys
import threading
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from algos import distributed
from algos.registry import ALGORITHMS, hyperparameters, store_algorithm_defaults
from algos.run_folder import StopSignal
from algos.settings import RunSettings
from core.errors import CheckpointError, ConfigError, NonFiniteError, Preempted

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
OmegaConf.register_new_resolver("if_null", lambda value, default: default if value is None else value, replace=True)
store_algorithm_defaults()

EXIT_BAD_INPUT, EXIT_NON_FINITE, EXIT_SIGNAL = 2, 3, 128  # a signal exits 128 + its number, as shells do


def differing_settings(saved: DictConfig, given: DictConfig) -> list[str]:
    saved_flat = {k: v for k, v in _flatten(_as_dict(saved)).items() if k != "resume"}
    given_flat = {k: v for k, v in _flatten(_as_dict(given)).items() if k != "resume"}
    return [
        f"{k} (saved {saved_flat.get(k)!r}, given {given_flat.get(k)!r})"
        for k in sorted(saved_flat.keys() | given_flat.keys())
        if saved_flat.get(k) != given_flat.get(k)
    ]


def _as_dict(cfg: DictConfig) -> dict:
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    return container


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_for_run_dir(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """A folder with a checkpoint continues with the config it was started with. `resume=<folder>` alone takes
    that config as it is; settings given on the command line must agree with it."""
    if cfg.resume is not None and not (run_dir / "checkpoint.pt").exists():
        raise ConfigError(
            f"resume={cfg.resume}: no checkpoint.pt in that folder; give a run folder that "
            f"holds one, or drop resume= to start a new run"
        )
    saved_path = run_dir / "config.yaml"
    if not (run_dir / "checkpoint.pt").exists() or not saved_path.exists():
        return cfg
    saved = OmegaConf.load(saved_path)
    assert isinstance(saved, DictConfig)  # a run folder's config.yaml is the mapping RunFolder.open wrote
    for setting in dataclasses.fields(RunSettings):  # settings added since the run was saved: their defaults
        if setting.name not in saved and setting.default is not dataclasses.MISSING:
            saved[setting.name] = setting.default
    given = [o for o in HydraConfig.get().overrides.task if not o.startswith(("resume=", "hydra."))]
    if cfg.resume is not None and not given:
        saved.resume = cfg.resume
        return saved
    diffs = differing_settings(saved, cfg)
    if diffs:
        raise ConfigError(
            f"{run_dir} holds a run started with other settings: {'; '.join(diffs[:5])}. "
            f"Resume it with its own settings (resume={run_dir} alone), or start a new run in "
            f"another folder"
        )
    return cfg


def install_stop_handlers() -> dict:
    """SIGTERM/SIGINT -> checkpoint after the current update, then stop (main thread only, where Python
    allows handlers)."""
    StopSignal.received = None
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, StopSignal.handler) for sig in (signal.SIGTERM, signal.SIGINT)}


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def run_job(cfg: DictConfig) -> float:
    """Train one job; returns the final evaluation mean (the objective Hydra sweepers optimise). The ranks of a
    data-parallel job share rank 0's run folder."""
    distributed.start_from_environment()  # the tasks of a submitit job start here; torchrun's ranks in main()
    run_dir = Path(distributed.from_main(HydraConfig.get().runtime.output_dir))
    previous_handlers = install_stop_handlers()
    try:
        cfg = config_for_run_dir(cfg, run_dir)
        print(f"run folder: {run_dir}", file=sys.stderr, flush=True)
        summary = importlib.import_module(f"algos.{cfg.algo.name}").train(cfg, run_dir)
        # Every rank done before any leaves the process group: a rank tearing its gloo connections down while
        # another still held them has been seen to abort at exit ("terminate called without an active exception").
        distributed.barrier()
    except (ConfigError, CheckpointError, NonFiniteError) as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra records this job as failed and the sweep goes on with the others
        bad_input = not isinstance(err, NonFiniteError)
        sys.exit(
            _fail(
                f"tokengym: {'error' if bad_input else 'stopped'}: {err}",
                EXIT_BAD_INPUT if bad_input else EXIT_NON_FINITE,
            )
        )
    except Preempted as err:
        sys.exit(_fail(f"tokengym: {err}", EXIT_SIGNAL + signal.Signals[str(StopSignal.received)].value))
    finally:
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        distributed.shutdown()
    print(
        f"run folder: {run_dir} (eval {summary['eval'].get('metric', 'return')} {summary['eval']['mean']:.4g})",
        file=sys.stderr,
    )
    return summary["eval"]["mean"]


def _fail(message: str, code: int) -> int:
    print(message, file=sys.stderr)
    return code


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
    keys = [
        o.key_or_group.split(".")[1]
        for o in overrides
        if o.key_or_group.startswith("algo.") and not (o.is_add() or o.is_force_add())
    ]
    for name in chosen_algos(overrides):
        if not keys or name not in ALGORITHMS:
            continue  # an unknown algorithm name is Hydra's to report, with the choices
        valid = [f.name for f in dataclasses.fields(hyperparameters(name))]
        for key in keys:
            if key not in valid:
                sys.exit(
                    _fail(
                        f"tokengym: error: algo.{key} is not a hyperparameter of {name}; valid: {', '.join(valid)}",
                        EXIT_BAD_INPUT,
                    )
                )


def main(algo: str | None = None) -> None:
    """`algo` pins the algorithm when an algorithm file is run on its own (CleanRL style)."""
    if algo is not None:
        if any(arg.startswith("algo=") for arg in sys.argv[1:]):
            sys.exit(
                _fail(
                    f"tokengym: error: python -m algos.{algo} trains {algo}; drop the algo= override "
                    f"or use python -m algos algo=...",
                    EXIT_BAD_INPUT,
                )
            )
        sys.argv.insert(1, f"algo={algo}")
    check_algo_keys(sys.argv[1:])
    distributed.start_from_environment()
    if distributed.world_size() > 1:
        join_as_rank()
    run_job()


def join_as_rank() -> None:
    """A data-parallel job is one run: only rank 0 keeps Hydra's output folder (config copies, log file); the other
    ranks log to their stderr, which torchrun prefixes with the rank, and take rank 0's folder (run_job)."""
    if any(arg in ("-m", "--multirun") for arg in sys.argv[1:]):
        sys.exit(
            _fail(
                "tokengym: error: torchrun starts the ranks of one run; a multirun (-m) is a sweep of runs: "
                "launch each with torchrun, or sweep without torchrun",
                EXIT_BAD_INPUT,
            )
        )
    if distributed.rank():
        sys.argv += ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout"]
