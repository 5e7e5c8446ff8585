"""The language-model pipeline's first two stages (DESIGN.md section 5): a base causal LM and a reward model
trained from ranked comparisons, cached by `ensure_text_models`, plus loading of any Hugging Face model."""
