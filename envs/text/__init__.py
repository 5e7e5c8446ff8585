"""The language-model pipeline's first two stages (DESIGN.md section 5), the ground the text environment stands on.

    settings.TextModelSettings, settings_from_overrides  data location, sizes, training lengths (one hash = one cache)
    cache.ensure_text_models(settings, cache_dir)         -> TextModelPaths(folder, base_lm, reward_model, metrics)
    loading.load_causal_lm(name_or_path)                  -> (model, tokenizer): any HF causal LM (the policy)
    loading.load_reward_model(name_or_path)               -> (model, tokenizer): any HF sequence classifier
    loading.require_same_vocabulary(policy_tok, reward_tok)  before passing token ids between the two
    reward_model.reward_scores(model, tokenizer, texts)   r(prompt + completion) for a batch of texts
    gold.gold_scores(texts), gold.gold_positive(texts)    the gold scorer (VADER), kept apart from the proxy
    build                                                 `python -m envs.text.build`: build, measure, report

Nothing is imported here, so that reading the settings does not load transformers.
"""
