"""DPO (envs/text/pipeline/dpo.py): eq. 7 by hand, sequence log-probabilities over the completion only, a tiny
training run that widens the implicit reward margin, and the run folder it writes."""

import math

import pytest
import torch

from core.errors import ConfigError
from envs.text.pipeline.dpo import (
    DPOSettings,
    dpo_loss,
    encode_groups,
    main,
    preference_metrics,
    run_config,
    sequence_logps,
    train_dpo,
    write_run,
)
from envs.text.pipeline.reward_model import RankedGroup


def test_the_loss_and_its_gradient_by_hand():
    """log pi(y_w) = -1, log pi_ref(y_w) = -2, log pi(y_l) = -3, log pi_ref(y_l) = -2.5, beta = 0.1: the margin
    is 0.1 * (1 - (-0.5)) = 0.15, the loss log(1 + e^-0.15) = 0.62096; its gradient is -beta sigmoid(-0.15) on
    log pi(y_w) (raising the winner lowers the loss) and +beta sigmoid(-0.15) on log pi(y_l)."""
    policy = torch.tensor([[-1.0, -3.0]], requires_grad=True)
    loss = dpo_loss(policy, torch.tensor([[-2.0, -2.5]]), torch.tensor([[1.0, 0.0]]), beta=0.1)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.15)), abs=1e-6)
    assert loss.item() == pytest.approx(0.62096, abs=1e-5)
    loss.backward()
    slope = 0.1 / (1 + math.exp(0.15))
    assert policy.grad is not None
    assert policy.grad[0, 0] < 0 < policy.grad[0, 1]
    assert policy.grad[0].tolist() == pytest.approx([-slope, slope], abs=1e-7)


def test_a_group_averages_its_pairs_and_a_tie_gives_none():
    """K = 3 with scores (1, 1, 0): the pairs (0, 2) and (1, 2), as the reward model's ranking loss takes them."""
    policy, reference = torch.tensor([[-1.0, -2.0, -4.0]]), torch.zeros(1, 3)
    expected = (math.log(1 + math.exp(-0.5 * 3.0)) + math.log(1 + math.exp(-0.5 * 2.0))) / 2
    assert dpo_loss(policy, reference, torch.tensor([[1.0, 1.0, 0.0]]), beta=0.5).item() == pytest.approx(expected)


def lm(tiny_lm):
    from envs.text.loading import load_causal_lm

    return load_causal_lm(tiny_lm)


GROUPS = [
    RankedGroup(prompt, (" great fun", " dull and boring"), (1.0, 0.0))
    for prompt in ["the movie was", "i think it is", "a film that", "the acting is"]
]


def test_sequence_log_probabilities_cover_the_completion_and_its_eos_only(tiny_lm):
    """Against each sequence alone, unpadded, with the prompt's positions left out of the labels."""
    model, tokenizer = lm(tiny_lm)
    groups = [GROUPS[0], RankedGroup("a", (" fun", " a fine movie!"), (0.0, 1.0))]
    data = encode_groups(tokenizer, groups, context=64)
    assert data.token_ids[1][-1] == tokenizer.eos_token_id and data.prompt_lengths[2] == 2  # <bos> a
    with torch.no_grad():
        batched = sequence_logps(model, data, [0, 1]).flatten()
        for row, (ids, start) in enumerate(zip(data.token_ids, data.prompt_lengths)):
            labels = torch.tensor([[-100] * start + ids[start:]])
            mean_nll = model(input_ids=torch.tensor([ids]), labels=labels).loss
            assert batched[row].item() == pytest.approx(-mean_nll.item() * (len(ids) - start), abs=1e-4)


def test_a_tiny_run_widens_the_implicit_reward_margin_on_its_pairs(tiny_lm):
    policy, tokenizer = lm(tiny_lm)
    reference, _ = lm(tiny_lm)
    before = preference_metrics(policy, reference, tokenizer, GROUPS, beta=0.1)
    assert before["mean_margin"] == 0.0 and before["loss"] == pytest.approx(math.log(2))
    torch.manual_seed(0)
    losses = train_dpo(
        policy, reference, tokenizer, GROUPS, DPOSettings(beta=0.1, epochs=8, learning_rate=3e-3, batch_groups=2)
    )
    after = preference_metrics(policy, reference, tokenizer, GROUPS, beta=0.1)
    assert len(losses) == 16 and after["pairs"] == 4
    assert after["mean_margin"] > 0.1 and after["pairwise_accuracy"] == 1.0 and after["loss"] < before["loss"]


def test_the_run_folder_is_one_the_evaluator_loads(tiny_lm, tmp_path):
    """config.yaml holds env=text_sentiment's group; pointed at the terse task and the tiny LM here, the evaluator
    loads policy/ as the policy."""
    from envs.text.evaluate import load_run_policy

    policy, tokenizer = lm(tiny_lm)
    with torch.no_grad():
        policy.lm_head.weight.mul_(2.0)
    config = run_config(DPOSettings(beta=0.3))
    assert config["env"]["kind"] == "text" and config["env"]["task"] == "sentiment"
    assert config["algo"]["name"] == "dpo" and config["algo"]["beta"] == 0.3
    config["env"].update(task="examples/terse_task.py:make_task", policy_model=str(tiny_lm))
    write_run(tmp_path / "dpo", policy, tokenizer, config, {"algo": "dpo", "seed": 0})
    _, loaded, reference, _, _ = load_run_policy(tmp_path / "dpo")
    assert torch.equal(loaded.lm_head.weight, policy.lm_head.weight)
    assert not torch.equal(reference.lm_head.weight, policy.lm_head.weight)


def test_bad_settings_stop_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tmp_path / "x"), "--beta", "0"])
    assert stop.value.code == 2 and "--beta=0.0 must be > 0" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no group has two responses"):
        encode_groups(None, [RankedGroup("a", (" b", " c"), (1.0, 1.0))], context=8)
