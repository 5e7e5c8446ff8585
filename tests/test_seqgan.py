"""SeqGAN (algos/seqgan.py) on the paper's oracle (../shared/data/seqgan-oracle) and on small hand-made cases."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from algos import seqgan
from algos.run_folder import StopSignal
from core.errors import ConfigError, Preempted
from envs.seqgan_oracle import load_oracle
from envs.sequences import BleuReferences, LSTMLanguageModel, distinct_n, generate, self_bleu, token_nll

REPO = Path(__file__).resolve().parent.parent
ORACLE = REPO.parent / "shared" / "data" / "seqgan-oracle" / "target_params.npz"
TINY = [
    "algo=seqgan",
    "env=seqgan_oracle",
    "env.num_eval=256",
    "algo.batch_size=32",
    "algo.dis_filter_sizes=[2,3]",
    "algo.dis_num_filters=[8,8]",
    "algo.rollout_num=2",
    "algo.eval_every=1",
    "algo.num_negatives=64",
    "checkpoint_interval_s=0",
    "torch_threads=1",
]


@pytest.fixture(scope="module")
def oracle():
    return load_oracle(ORACLE, start_token=0)


def test_oracle_samples_score_near_its_entropy_rate_and_far_below_random_tokens(oracle):
    torch.manual_seed(0)
    samples = generate(oracle, 2000, 20)
    with torch.no_grad():
        logp = torch.log_softmax(oracle.logits(samples), -1)
    entropy_rate = -(logp.exp() * logp).sum(-1).mean().item()  # E over its own prefixes of H(next token)
    nll_own = token_nll(oracle, samples).mean().item()
    nll_random = token_nll(oracle, torch.randint(0, 5000, (2000, 20))).mean().item()
    assert abs(nll_own - entropy_rate) < 0.1, (nll_own, entropy_rate)
    assert 5.5 < nll_own < 6.0  # the data README: 5.74 on fresh samples, 5.758 on the fork's real_data.txt
    assert nll_random > nll_own + 5  # README: 11.42 for uniformly random tokens


def test_a_lower_temperature_trades_diversity_for_nll_oracle(oracle):
    """generate(..., temperature=T) divides the logits by T: the oracle's own samples score lower under it as T
    falls, and repeat themselves more (the frontier benchmarks/seqgan_oracle.py compares SeqGAN with)."""
    scores = []
    for temperature in (1.0, 0.7):
        torch.manual_seed(0)
        samples = generate(oracle, 1000, 20, temperature=temperature)
        scores.append((token_nll(oracle, samples).mean().item(), distinct_n(samples.tolist(), 2)))
    (nll_warm, distinct_warm), (nll_cool, distinct_cool) = scores
    assert nll_cool < nll_warm - 0.5 and distinct_cool < distinct_warm


def test_oracle_matches_the_shipped_real_data_figure(oracle):
    rows = (REPO.parent / "shared/data/seqgan-oracle/from-fork-104ki/real_data.txt").read_text().split("\n")
    real = torch.tensor([[int(t) for t in row.split()] for row in rows if row])
    assert token_nll(oracle, real).mean().item() == pytest.approx(5.758, abs=0.002)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda a: a.pop("Wo"), "lacks Wo"),
        (lambda a: a.update(bi=np.zeros((32, 32), np.float32)), "bi has shape (32, 32)"),
        (lambda a: a.update(Ui=np.zeros((16, 16), np.float32)), "disagrees with H=32"),
    ],
)
def test_a_malformed_oracle_names_the_expected_layout(tmp_path, damage, message):
    arrays = {k: v for k, v in np.load(ORACLE).items() if k != "param_order"}
    damage(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ConfigError, match="expected an .npz with float arrays g_embeddings VxE") as err:
        load_oracle(tmp_path / "bad.npz", 0)
    assert message in str(err.value)


def test_a_missing_or_unreadable_oracle_file_is_a_clear_error_from_the_command_line(tmp_path):
    (tmp_path / "junk.npz").write_text("not a zip")
    for path, message in [(tmp_path / "none.npz", "not found"), (tmp_path / "junk.npz", "not a readable npz")]:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "algos",
                *TINY,
                "env.num_real=256",
                f"env.oracle_path={path}",
                f"hydra.run.dir={tmp_path / 'run'}",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 2, out.stderr[-2000:]
        assert message in out.stderr and "g_embeddings VxE" in out.stderr


def small_discriminator(vocab=50, length=6):
    torch.manual_seed(0)
    return seqgan.Discriminator(vocab, length, 8, [1, 2, 3], [4, 4, 4], dropout=0.25)


def test_the_monte_carlo_reward_of_a_finished_sequence_is_the_discriminators_output():
    disc = small_discriminator()
    policy = LSTMLanguageModel(50, 8, 8, start_token=0)
    sequences = torch.randint(0, 50, (5, 6))
    rewards = seqgan.monte_carlo_rewards(policy, disc, sequences, rollout_num=4)
    assert rewards.shape == (5, 6)
    torch.testing.assert_close(rewards[:, -1], disc.prob_real(sequences))
    assert ((rewards > 0) & (rewards < 1)).all()


def test_monte_carlo_completions_keep_the_prefix():
    policy = LSTMLanguageModel(50, 8, 8, start_token=0)
    prefix = torch.randint(0, 50, (7, 3))
    completed = policy.complete(prefix, 6)
    assert completed.shape == (7, 6) and torch.equal(completed[:, :3], prefix)


def test_the_rollout_copy_is_untouched_by_the_generator_step_and_moves_by_the_update_rate():
    torch.manual_seed(0)
    generator = LSTMLanguageModel(50, 8, 8, start_token=0)
    rollout = LSTMLanguageModel(50, 8, 8, start_token=0)
    rollout.load_state_dict(generator.state_dict())
    before = {k: v.clone() for k, v in rollout.state_dict().items()}
    hp = seqgan.Hyperparameters(dis_filter_sizes=[1], dis_num_filters=[4])
    samples = generator.complete(torch.empty(8, 0, dtype=torch.long), 6)
    seqgan.generator_step(generator, torch.optim.Adam(generator.parameters(), lr=0.01), samples, torch.rand(8, 6), hp)
    assert all(torch.equal(before[k], v) for k, v in rollout.state_dict().items())
    theta = dict(generator.named_parameters())
    assert not torch.equal(before["lstm.weight_hh_l0"], theta["lstm.weight_hh_l0"])

    seqgan.update_rollout_policy(rollout, generator, rate=0.8)
    beta = dict(rollout.named_parameters())
    torch.testing.assert_close(
        beta["lstm.weight_hh_l0"], 0.8 * before["lstm.weight_hh_l0"] + 0.2 * theta["lstm.weight_hh_l0"]
    )
    assert torch.equal(beta["embedding.weight"], theta["embedding.weight"])  # copied outright, as the authors


def test_policy_gradient_loss_and_baseline_on_a_hand_computed_case():
    log_probs = torch.log(torch.tensor([[0.5, 0.25], [0.5, 0.5]]))
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = -(math.log(0.5) * 1 + math.log(0.5) * 1)
    assert seqgan.policy_gradient_loss(log_probs, rewards).item() == pytest.approx(expected)
    torch.testing.assert_close(seqgan.advantages(rewards, baseline=True), torch.tensor([[0.5, -0.5], [-0.5, 0.5]]))
    assert torch.equal(seqgan.advantages(rewards, baseline=False), rewards)


def test_discriminator_loss_adds_the_l2_penalty_of_the_output_layer():
    disc = small_discriminator().eval()
    x, y = torch.randint(0, 50, (4, 6)), torch.tensor([0, 1, 1, 0])
    ce = torch.nn.functional.cross_entropy(disc(x), y)
    penalty = (disc.output.weight.pow(2).sum() + disc.output.bias.pow(2).sum()) / 2
    torch.testing.assert_close(seqgan.discriminator_loss(disc, x, y, l2=0.2), ce + 0.2 * penalty)


def test_bleu_and_diversity_on_hand_computed_cases():
    refs = BleuReferences([[1, 2, 3, 4, 5], [1, 2, 3, 9, 9]])
    assert refs.sentence_bleu([1, 2, 3, 4, 5]) == pytest.approx(1.0)
    # clipped n-gram precisions of [1, 2, 3, 9, 5]: 5/5, 3/4, 2/3, 1/2 (each n-gram may come from either reference)
    assert refs.sentence_bleu([1, 2, 3, 9, 5]) == pytest.approx((1 * 0.75 * (2 / 3) * 0.5) ** 0.25)
    # [5, 4, 3, 2, 1]: every unigram matches, no longer n-gram does: smoothed to 0.1 / count
    assert refs.sentence_bleu([5, 4, 3, 2, 1]) == pytest.approx((1 * (0.1 / 4) * (0.1 / 3) * (0.1 / 2)) ** 0.25)
    # brevity penalty: [1, 2, 3] against the closest reference length 5
    assert refs.sentence_bleu([1, 2, 3]) == pytest.approx(math.exp(1 - 5 / 3) * (1 * 1 * 1 * (0.1 / 1)) ** 0.25)
    assert distinct_n([[1, 2, 1, 2]], 2) == pytest.approx(2 / 3)
    assert self_bleu([[1, 2, 3, 4]] * 4) == pytest.approx(1.0)


def test_a_short_seqgan_run_lowers_nll_oracle(compose_cfg, tmp_path):
    cfg = compose_cfg(
        *TINY, "env.num_real=1024", "algo.pretrain_epochs=3", "algo.dis_pretrain_rounds=1", "algo.adversarial_epochs=2"
    )
    summary = seqgan.train(cfg, tmp_path)
    history = summary["history"]
    assert [h["phase"] for h in history] == ["initial", "mle", "mle", "mle", "adversarial", "adversarial"]
    assert history[0]["nll_oracle"] > 11  # a random generator: near uniform over 5,000 tokens (10.3 in the paper)
    assert summary["final"]["nll_oracle"] < history[0]["nll_oracle"] - 0.5, history
    assert (tmp_path / "checkpoint.pt").exists() and summary["eval"]["metric"] == "nll_oracle"


def test_a_stopped_seqgan_run_resumes_to_the_same_generator(compose_cfg, tmp_path, monkeypatch):
    overrides = [
        *TINY,
        "env.num_real=256",
        "algo.pretrain_epochs=2",
        "algo.dis_pretrain_rounds=1",
        "algo.adversarial_epochs=2",
    ]
    seqgan.train(compose_cfg(*overrides), tmp_path / "ref")

    real_round = seqgan.discriminator_round

    def stop_after_round(*args):  # SIGTERM arrives during the discriminator's pre-training
        StopSignal.received = "SIGTERM"
        return real_round(*args)

    monkeypatch.setattr(seqgan, "discriminator_round", stop_after_round)
    with pytest.raises(Preempted):
        seqgan.train(compose_cfg(*overrides), tmp_path / "run")
    monkeypatch.setattr(seqgan, "discriminator_round", real_round)
    StopSignal.received = None
    resumed = seqgan.train(compose_cfg(*overrides), tmp_path / "run")

    states = [torch.load(tmp_path / d / "checkpoint.pt", weights_only=True)["modules"] for d in ("ref", "run")]
    for module in ("generator", "rollout", "discriminator"):
        assert all(torch.equal(states[0][module][k], states[1][module][k]) for k in states[0][module])
    assert [h["step"] for h in resumed["history"]] == [0, 1, 2, 4, 5]


def test_adversarial_training_can_start_from_another_runs_pretraining(compose_cfg, tmp_path):
    pre = [*TINY, "env.num_real=256", "algo.pretrain_epochs=2", "algo.dis_pretrain_rounds=1"]
    pretrained = seqgan.train(compose_cfg(*pre, "algo.adversarial_epochs=0"), tmp_path / "pre")
    variant = seqgan.train(
        compose_cfg(
            *pre,
            "algo.adversarial_epochs=1",
            "algo.generator_update=ppo",
            "algo.baseline=true",
            f"algo.init_from={tmp_path / 'pre'}",
        ),
        tmp_path / "ppo",
    )
    assert variant["history"][: len(pretrained["history"])] == pretrained["history"]
    assert variant["history"][-1]["phase"] == "adversarial"
    with pytest.raises(ConfigError, match="not at the end of pre-training"):
        seqgan.train(
            compose_cfg(*pre, "algo.adversarial_epochs=1", f"algo.init_from={tmp_path / 'ppo'}"), tmp_path / "again"
        )


def test_seqgan_needs_whole_sequence_data(compose_cfg, tmp_path):
    with pytest.raises(ConfigError, match="env.kind=classic has no whole-sequence data"):
        seqgan.train(compose_cfg("algo=seqgan", "env=cartpole"), tmp_path)


TASK_WITH_CORPUS = """
from envs.text.tasks import TextTask

SENTENCES = ["the movie was great fun", "a dull and boring film", "i think it is a fine movie !",
             "the acting is great", "a fine and fun film", "i think the movie was dull"] * 4


def make_task(env_cfg):
    return TextTask(name="reviews", prompts=["the movie"], reward=lambda p, c: 0.0, corpus=SENTENCES,
                    heldout_corpus=["the film was fun", "a boring movie"])
"""


@pytest.mark.parametrize("generator", ["lstm", "transformer"])
def test_seqgan_trains_on_a_text_tasks_corpus_and_reports_bleu(generator, tiny_lm, compose_cfg, tmp_path):
    (tmp_path / "reviews.py").write_text(TASK_WITH_CORPUS)
    cfg = compose_cfg(
        "algo=seqgan",
        "env=text",
        f"env.task={tmp_path / 'reviews.py'}:make_task",
        f"env.policy_model={tiny_lm}",
        "env.max_prompt_tokens=6",
        "env.max_new_tokens=6",
        f"algo.generator={generator}",
        "algo.pretrain_epochs=2",
        "algo.dis_pretrain_rounds=1",
        "algo.adversarial_epochs=1",
        "algo.batch_size=8",
        "algo.dis_filter_sizes=[2,3]",
        "algo.dis_num_filters=[4,4]",
        "algo.rollout_num=2",
        "algo.eval_every=1",
    )
    summary = seqgan.train(cfg, tmp_path / "run")
    final = summary["final"]
    assert summary["eval"]["metric"] == "bleu4" and 0 <= final["bleu4"] <= 1
    assert {"self_bleu4", "distinct_2", "distinct_3"} <= final.keys()


def test_the_transformer_generator_of_a_text_task_starts_from_its_pretrained_lm(tiny_lm):
    from transformers import GPT2LMHeadModel

    from envs.sequences import SequenceTask

    task = SequenceTask(
        name="t",
        real=torch.zeros(2, 4, dtype=torch.long),
        vocab_size=300,
        start_token=0,
        metrics=dict,
        headline="bleu4",
        lower_is_better=False,
        num_eval=2,
        pretrained_generator=str(tiny_lm),
    )
    generator = seqgan.make_generator(task, seqgan.Hyperparameters(generator="transformer"))
    saved = GPT2LMHeadModel.from_pretrained(tiny_lm).state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in generator.model.state_dict().items())
