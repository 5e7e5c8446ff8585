"""The errors every layer raises; the command line maps each to an exit code (algos/cli.py)."""


class ConfigError(ValueError):
    """A bad setting, caught before any work starts; the message names the value and what would be valid."""


class CheckpointError(ConfigError):
    """A checkpoint that cannot be loaded safely, or that belongs to another algorithm, env or network."""


class NonFiniteError(RuntimeError):
    """A loss, gradient, reward or observation became NaN or infinite; the last good checkpoint is kept."""


class Preempted(RuntimeError):
    """SIGTERM or SIGINT arrived: the run finished its update, wrote a checkpoint and stopped."""
