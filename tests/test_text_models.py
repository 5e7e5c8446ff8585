"""The language-model pipeline's stages 1 and 2 on tiny models and toy text: the reward model's K-wise loss by
hand, tokenizer and save/load round trips, short trainings that must learn, the cache, and bad input."""

import logging
import math
import os
import random

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here may download; set before transformers is imported

import pytest
import torch
from transformers import AutoModelForSequenceClassification, GPT2ForSequenceClassification

from core.errors import ConfigError
from envs.text.loading import load_causal_lm, load_report_silenced, load_reward_model, require_same_vocabulary
from envs.text.pipeline.base_lm import (
    build_language_model,
    encode_sentences,
    heldout_perplexity,
    sample_continuations,
    train_language_model,
    train_tokenizer,
)
from envs.text.pipeline.cache import build_text_models, ensure_text_models
from envs.text.pipeline.corpus import Sentence, load_corpus, read_sentences
from envs.text.pipeline.reward_model import (
    evaluate_ranking,
    initial_reward_model,
    make_ranked_groups,
    pairwise_accuracy,
    ranking_loss,
    reward_scores,
    train_reward_model,
)
from envs.text.pipeline.settings import settings_from_overrides

TINY = [
    "vocab_size=300",
    "context_length=32",
    "n_layer=1",
    "n_embd=32",
    "n_head=2",
    "lm_batch_size=16",
    "lm_learning_rate=3e-3",
    "prompt_words=3",
    "rm_batch_prompts=8",
    "rm_learning_rate=1e-3",
    "torch_threads=1",
]

GOOD = ["great", "wonderful", "moving", "funny", "charming", "brilliant"]
BAD = ["awful", "boring", "dull", "tedious", "clumsy", "lifeless"]
SUBJECTS = ["the film", "this movie", "the story", "the cast", "the script"]


def toy_reviews(n: int, seed: int) -> list[Sentence]:
    """Reviews whose sentiment sits in their last words: 'the film is quite great and funny .' (label 1)."""
    rng = random.Random(seed)
    reviews = []
    for i in range(n):
        label = i % 2
        words = GOOD if label else BAD
        text = f"{rng.choice(SUBJECTS)} is quite {rng.choice(words)} and {rng.choice(words)} ."
        reviews.append(Sentence(text, label))
    return reviews


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; two threads on a busy machine run many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_settings():
    return settings_from_overrides(TINY)


@pytest.fixture(scope="module")
def tokenizer(tiny_settings):
    return train_tokenizer(
        [s.text for s in toy_reviews(400, seed=0)], tiny_settings.vocab_size, tiny_settings.context_length
    )


@pytest.fixture(scope="module")
def tiny_lm(tokenizer, tiny_settings):
    torch.manual_seed(0)
    return build_language_model(tokenizer, tiny_settings)


# ------------------------------------------------------------------------------------ reward-model loss
def test_ranking_loss_matches_hand_computation_for_k3():
    rewards = torch.tensor([[0.5, -1.0, 2.0]])
    scores = torch.tensor([[2.0, 0.0, 1.0]])  # the labeller ranks response 0 > 2 > 1
    # pairs (w, l): (0, 2) margin -1.5, (0, 1) margin 1.5, (2, 1) margin 3.0; -log sigmoid(m) = log(1 + e^-m)
    expected = (math.log1p(math.exp(1.5)) + math.log1p(math.exp(-1.5)) + math.log1p(math.exp(-3.0))) / 3
    assert ranking_loss(rewards, scores).item() == pytest.approx(expected, rel=1e-6)
    assert pairwise_accuracy(rewards, scores) == pytest.approx(2 / 3)


def test_ranking_loss_averages_each_group_over_its_own_pairs():
    rewards = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, 3.0]])
    scores = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 0.0]])  # group 2: a tie, so only (0, 2) and (1, 2)
    group1 = (math.log1p(math.exp(1.5)) + math.log1p(math.exp(-1.5)) + math.log1p(math.exp(-3.0))) / 3
    group2 = (math.log1p(math.exp(2.0)) + math.log1p(math.exp(3.0))) / 2
    assert ranking_loss(rewards, scores).item() == pytest.approx((group1 + group2) / 2, rel=1e-6)


def test_ranking_loss_k2_is_bradley_terry_and_pushes_the_winner_up():
    rewards = torch.tensor([[0.3, 1.1]], requires_grad=True)
    loss = ranking_loss(rewards, torch.tensor([[1.0, 0.0]]))
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(0.8))), rel=1e-6)
    loss.backward()
    assert rewards.grad[0, 0] < 0 < rewards.grad[0, 1]  # gradient descent raises r_w and lowers r_l


# ------------------------------------------------------------------------------------ tokenizer and loading
def test_tokenizer_round_trip_and_special_tokens(tokenizer):
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    for text in ["the film is quite great and funny .", "naïve — unseen chars ☃ and  double  spaces"]:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_language_model_saves_and_loads_with_from_pretrained(tiny_lm, tokenizer, tmp_path):
    tiny_lm.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, loaded_tokenizer = load_causal_lm(tmp_path)
    ids = torch.tensor([tokenizer("the film is great")["input_ids"]])
    torch.testing.assert_close(model(input_ids=ids).logits, tiny_lm.eval()(input_ids=ids).logits)
    assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert loaded_tokenizer("the film")["input_ids"] == tokenizer("the film")["input_ids"]


def test_reward_model_saves_and_loads_with_from_pretrained(tiny_lm, tokenizer, tmp_path):
    tiny_lm.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    rm = initial_reward_model(tmp_path / "lm").eval()
    assert isinstance(rm, GPT2ForSequenceClassification)
    rm.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    loaded, loaded_tokenizer = load_reward_model(tmp_path / "rm")
    texts = ["the film is great .", "a dull , tedious and very long mess of a movie ."]
    with torch.no_grad():
        expected = reward_scores(rm, tokenizer, texts)
        torch.testing.assert_close(reward_scores(loaded, loaded_tokenizer, texts), expected)
        one_by_one = torch.cat([reward_scores(loaded, loaded_tokenizer, [t]) for t in texts])
    torch.testing.assert_close(one_by_one, expected)  # padding does not change a score


def test_classifier_with_several_labels_needs_the_reward_label_named(tiny_lm, tokenizer, tmp_path):
    tiny_lm.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with load_report_silenced():  # the two-label head is new
        clf = AutoModelForSequenceClassification.from_pretrained(
            tmp_path, num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1}
        )
    clf.save_pretrained(tmp_path)
    model, tok = load_reward_model(tmp_path)
    with torch.no_grad():
        logits = model(**tok(["great fun"], return_tensors="pt")).logits
        assert reward_scores(model, tok, ["great fun"], label="POSITIVE").item() == pytest.approx(logits[0, 1].item())
        with pytest.raises(ConfigError, match="NEGATIVE.*POSITIVE"):
            reward_scores(model, tok, ["great fun"])


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_new_reward_head_is_reported_by_one_line_of_ours_not_by_transformers_load_report(tiny_lm, tmp_path, caplog):
    tiny_lm.save_pretrained(tmp_path)
    transformers_log, records = logging.getLogger("transformers.modeling_utils"), Records()
    level = transformers_log.level
    transformers_log.addHandler(records)
    try:
        AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=1)
        assert any("LOAD REPORT" in m and "score.weight" in m for m in records.messages)  # what is silenced
        records.messages.clear()
        with caplog.at_level(logging.INFO, logger="tokengym.text"):
            initial_reward_model(tmp_path)
    finally:
        transformers_log.removeHandler(records)
    assert records.messages == [] and transformers_log.level == level
    assert [r.getMessage() for r in caplog.records if r.name == "tokengym.text"] == [
        f"reward model: new scalar head score.weight on the trunk of {tmp_path}, randomly initialised; "
        f"stage 2 trains it"
    ]


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot load the policy .*no_such_model.*save_pretrained"):
        load_causal_lm(tmp_path / "no_such_model")
    with pytest.raises(ConfigError, match="cannot load the reward .*no_such_model"):
        load_reward_model(tmp_path / "no_such_model")


def test_vocabulary_mismatch_names_both_sizes(tokenizer, tiny_settings):
    require_same_vocabulary(tokenizer, tokenizer)
    other = train_tokenizer([s.text for s in toy_reviews(400, seed=0)], 280, tiny_settings.context_length)
    with pytest.raises(
        ConfigError, match=f"policy tokenizer has {len(tokenizer)} tokens and the reward tokenizer {len(other)}"
    ):
        require_same_vocabulary(tokenizer, other)


# ------------------------------------------------------------------------------------ short trainings
def test_tiny_language_model_training_lowers_heldout_loss(tokenizer, tiny_settings):
    train = encode_sentences(tokenizer, [s.text for s in toy_reviews(320, seed=1)])
    heldout = encode_sentences(tokenizer, [s.text for s in toy_reviews(64, seed=2)])
    torch.manual_seed(0)
    model = build_language_model(tokenizer, tiny_settings)
    before = heldout_perplexity(model, heldout, tokenizer.pad_token_id)
    train_language_model(model, train, tokenizer.pad_token_id, settings_from_overrides([*TINY, "lm_epochs=4"]))
    after = heldout_perplexity(model, heldout, tokenizer.pad_token_id)
    assert after < 0.25 * before, (before, after)
    completions = sample_continuations(model, tokenizer, ["the film is", "this movie"], max_new_tokens=6, seed=0)
    assert len(completions) == 2 and all(isinstance(c, str) for c in completions)


def test_tiny_reward_model_learns_a_separable_ranking(tiny_lm, tokenizer, tmp_path):
    tiny_lm.save_pretrained(tmp_path)
    torch.manual_seed(0)
    rm = initial_reward_model(tmp_path)
    settings = settings_from_overrides([*TINY, "rm_epochs=3"])
    train = make_ranked_groups(toy_reviews(200, seed=3), 120, 4, settings.prompt_words, "human", random.Random(0))
    heldout = make_ranked_groups(toy_reviews(80, seed=4), 60, 4, settings.prompt_words, "human", random.Random(1))
    assert all(len(g.responses) == 4 and sorted(g.scores) == [0.0, 0.0, 1.0, 1.0] for g in train)
    before = evaluate_ranking(rm, tokenizer, heldout)
    train_reward_model(rm, tokenizer, train, settings)
    after = evaluate_ranking(rm, tokenizer, heldout)
    assert after["loss"] < before["loss"]
    assert after["pairwise_accuracy"] >= 0.9, (before, after)


# ------------------------------------------------------------------------------------ cache and bad input
def write_toy_corpus(folder) -> list[str]:
    paths = []
    for label, name in ((1, "pos.txt"), (0, "neg.txt")):
        path = folder / name
        path.write_text("\n".join(s.text for s in toy_reviews(240, seed=5) if s.label == label) + "\n")
        paths.append(str(path))
    return paths


def test_ensure_text_models_builds_once_then_loads_from_the_cache(tmp_path, monkeypatch):
    files = write_toy_corpus(tmp_path)
    settings = settings_from_overrides([*TINY, f"text_files=[{files[0]},{files[1]}]", "lm_epochs=1", "rm_prompts=32"])
    paths = ensure_text_models(settings, tmp_path / "cache")
    assert paths.folder.parent == tmp_path / "cache" and paths.metrics["rm_train_groups"] == 32
    model, tok = load_causal_lm(paths.base_lm)
    rm, rm_tok = load_reward_model(paths.reward_model)
    require_same_vocabulary(tok, rm_tok)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [paths.folder.name]  # no staging left behind

    def must_not_build(*args, **kwargs):
        raise AssertionError("the cached models were rebuilt")

    monkeypatch.setattr("envs.text.pipeline.cache.build_text_models", must_not_build)
    assert ensure_text_models(settings, tmp_path / "cache") == paths


def test_missing_text_file_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "reviews.txt"
    with pytest.raises(ConfigError, match=f"text file {missing} not found.*text_files=\\[/path/to/your.txt\\]"):
        read_sentences(missing)
    settings = settings_from_overrides([*TINY, f"text_files=[{missing}]", "labeller=gold"])
    with pytest.raises(ConfigError, match=str(missing)):
        build_text_models(settings, tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())  # stopped before anything was written


def test_corpus_is_read_with_split_on_newlines_only(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("one \u0085 line\n\ntwo\n", encoding="utf-8")
    assert [s.text for s in load_corpus([str(path)], [1])] == ["one \u0085 line", "two"]


def test_bad_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown text-model setting vocab;"):
        settings_from_overrides(["vocab=10"])
    with pytest.raises(ConfigError, match="labeller=human needs one label per text file"):
        settings_from_overrides(["text_files=[a.txt]", "labeller=human"])
    with pytest.raises(ConfigError, match="n_embd=30 must be a multiple of n_head=4"):
        settings_from_overrides(["n_embd=30"])
