"""The offline language-model pipeline's first two stages (DESIGN.md section 5): the default base LM and reward
model that the default text task stands on, built once before any run, cached, and measured.

    settings.TextModelSettings, settings_from_overrides  data location, sizes, training lengths (one hash = one cache)
    corpus.load_corpus, split_heldout                    sentences from text files, split once into held-in/held-out
    base_lm                                              stage 1: a byte-level BPE tokenizer and a small GPT-2
    reward_model                                         stage 2: a scalar-head transformer on ranked responses
    reward_model.reward_scores(model, tokenizer, texts)  r(prompt + completion) for a batch of texts
    cache.ensure_text_models(settings, cache_dir)        -> TextModelPaths(folder, base_lm, reward_model, metrics)
    build                                                `python -m envs.text.pipeline.build`: build, measure, report
    dpo                                                  `python -m envs.text.pipeline.dpo`: DPO on the reward model's
                                                         comparisons (Rafailov et al. 2023), a non-RL baseline

Runs load the built folders with envs/text/loading.py; the gold scorer is envs/text/gold.py. Nothing is imported
here, so that reading the settings does not load transformers.
"""
