"""A text task of your own: prompts plus a reward of (prompt, completion), in your own file.

python -m algos algo=ppo_clip env=text env.task=examples/terse_task.py:make_task
"""

from envs.text.tasks import TextTask

PROMPTS = ["the movie was", "i think it is", "a film that", "the acting is"]


def terse_and_fun(prompt: str, completion: str) -> float:
    """Half a point off per word, two points for saying "fun"."""
    return 2.0 * ("fun" in completion) - 0.5 * len(completion.split())


def make_task(settings) -> TextTask:
    """Called with the env's checked settings (envs/text/env.py, Settings: settings.max_new_tokens, ...);
    return the task (prompts may be any list, e.g. read from a file)."""
    return TextTask(name="terse", prompts=PROMPTS, reward=terse_and_fun)
