"""The text environment (DESIGN.md section 4): generating a completion token by token, with the reward of a text
task, for any Hugging Face causal LM as the policy. By role:

Run time, what a run on env=text or env=text_sentiment loads:
    env.Settings, env.make_vector_env           the `text` env kind (envs/__init__.py, KINDS)
    env.TokenEnv, env.TokenVectorEnv            one sequence, and a batch of them stepped together
    tokens.PAD, tokens.encode_prompt            the observation's padding, and how every prompt becomes ids
    tasks.TextTask, tasks.load_task             prompts + reward; built-in tasks (TASKS) or the user's own file
    sentiment.sentiment_task                    the default task: the learned reward model, VADER as gold
    agent.TextAgent                             the LM with a value head, inside core.agent.AgentContract
    loading.load_causal_lm, load_reward_model   any HF causal LM (the policy) or sequence classifier (the reward)
    loading.require_same_vocabulary             before passing token ids between the two
    gold.gold_scores, gold.gold_positive        the gold scorer (VADER), kept apart from the proxy reward
    sequences.text_sequence_task                a task's corpus as whole-sequence data for algo=seqgan
Evaluation of a finished run, beside best-of-N sampling from the reference model:
    evaluate                                    `python -m envs.text.evaluate <run folder>`
The offline pipeline that builds the default base LM and reward model once, before any run:
    pipeline/                                   `python -m envs.text.pipeline.build` (see its __init__)

Nothing is imported here, so that reading a setting or a task does not load transformers.
"""
