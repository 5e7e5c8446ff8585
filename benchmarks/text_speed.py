"""Speed of the text pipeline, each measured side by side in one run (alternating, repeated, median):

1. Rollout: tokens per second generated through TokenVectorEnv by the text agent (KV cache, one token per
   row per step, no reference model and a zero reward, so only generation is timed) against the same model's
   batched `generate` with KV cache at the same batch size and response length.
2. Update: one pass of PPO's loss (evaluate + backward) over every per-token sample of a rollout, as one
   minibatch and as `--minibatches`, against one teacher-forced forward and backward over the same sequences.

    python -m benchmarks.text_speed --model <LM folder or name> --batch 16 --new-tokens 24 --repeats 5
    python -m benchmarks.text_speed --tiny ...     # the 2-layer GPT-2 of the tests, built on the spot
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from algos.rollout import Rollout
from envs.text.agent import TextAgent, group_by_longest
from envs.text.env import TokenVectorEnv
from envs.text.loading import load_causal_lm
from envs.text.tasks import TextTask
from envs.text.tokens import PAD, left_padded

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["the movie was", "i think it is", "a film that", "the acting is", "this is one of the"]


def build_tiny_model(folder: Path) -> str:
    """The tests' tiny GPT-2 (tests/test_text_env.py): 2 layers, 32 units, a 300-token byte-level BPE."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from envs.text.pipeline.base_lm import train_tokenizer

    tokenizer = train_tokenizer(
        ["the movie was great fun", "a dull and boring film", "i think it is a fine movie!"] * 20,
        vocab_size=300,
        context_length=64,
    )
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def speed_env(tokenizer, batch: int, new_tokens: int) -> TokenVectorEnv:
    task = TextTask(name="speed", prompts=PROMPTS, reward=lambda p, c: 0.0)
    return TokenVectorEnv(task, tokenizer, batch, max_prompt_tokens=16, max_new_tokens=new_tokens)


def rollout_seconds(agent, tokenizer, batch: int, new_tokens: int, seed: int):
    """Time to step `batch` rows `new_tokens` times through the environment: batch * new_tokens tokens
    (a row that reaches EOS restarts on a new prompt, as in training). Returns (seconds, the batch)."""
    rollout = Rollout(speed_env(tokenizer, batch, new_tokens), agent, num_steps=new_tokens, gamma=1.0, seed=seed)
    start = time.perf_counter()
    collected = rollout.collect(gae_lambda=0.95)
    return time.perf_counter() - start, collected


def generate_seconds(lm, tokenizer, batch: int, new_tokens: int) -> float:
    _, ids, mask, pad = left_padded(tokenizer, [PROMPTS[i % len(PROMPTS)] for i in range(batch)])
    with torch.no_grad():
        seconds = timed(
            lambda: lm.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                top_k=0,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=pad,
                use_cache=True,
            )
        )
    return seconds


def update_seconds(agent, batch, minibatches: int, by: str = "sample") -> float:
    def one_pass():
        for idx in batch.minibatch_indices(minibatches, by):
            logprob, entropy, value = agent.evaluate(batch.obs[idx], batch.actions[idx])
            (logprob.mean() + value.mean() + entropy.mean()).backward()
        agent.zero_grad()

    return timed(one_pass)


def teacher_forced_seconds(agent, batch) -> float:
    """One forward and backward over the distinct longest sequences the batch's samples are prefixes of."""
    runs, _, lengths = group_by_longest(batch.obs)
    ids = batch.obs[runs][:, : int(lengths.max())]

    def fwd_bwd():
        agent.lm(input_ids=ids.clamp(min=0), attention_mask=(ids != PAD).long()).logits.mean().backward()
        agent.zero_grad()

    return timed(fwd_bwd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", help="causal LM folder or name")
    model.add_argument("--tiny", action="store_true", help="the tests' tiny GPT-2, built in a temporary folder")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--minibatches", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="results/text_speed.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_path = build_tiny_model(Path(tempfile.mkdtemp())) if args.tiny else args.model
    torch.manual_seed(0)
    lm, tokenizer = load_causal_lm(model_path)
    agent = TextAgent(lm, len(tokenizer))

    ours, theirs, one_mb, many_mb, by_env, forced = [], [], [], [], [], []
    for i in range(args.repeats):
        if i % 2:
            theirs.append(generate_seconds(lm, tokenizer, args.batch, args.new_tokens))
        seconds, batch = rollout_seconds(agent, tokenizer, args.batch, args.new_tokens, seed=i)
        ours.append(seconds)
        if i % 2 == 0:
            theirs.append(generate_seconds(lm, tokenizer, args.batch, args.new_tokens))
        forced.append(teacher_forced_seconds(agent, batch))
        one_mb.append(update_seconds(agent, batch, 1))
        many_mb.append(update_seconds(agent, batch, args.minibatches))
        by_env.append(update_seconds(agent, batch, args.minibatches, by="env"))

    tokens = args.batch * args.new_tokens
    ours_tps = statistics.median(tokens / s for s in ours)
    gen_tps = statistics.median(tokens / s for s in theirs)
    forced_s = statistics.median(forced)
    command = (
        f"python -m benchmarks.text_speed {'--tiny' if args.tiny else '--model ' + args.model} "
        f"--batch {args.batch} --new-tokens "
        f"{args.new_tokens} --minibatches {args.minibatches} --repeats {args.repeats} --threads {args.threads}"
    )
    n_params = sum(p.numel() for p in lm.parameters())
    model_name = "the tests' tiny GPT-2" if args.tiny else args.model
    lines = [
        "# Text pipeline speed, side by side",
        "",
        f"Command: `{command}`  ",
        f"Model: {model_name} ({n_params / 1e6:.2f} M parameters), batch {args.batch}, {args.new_tokens} new tokens, "
        f"{args.threads} torch thread(s), median of {args.repeats} alternating repeats.",
        "",
        "| measure | ours | reference | ratio (target) |",
        "|---|---|---|---|",
        f"| rollout tokens/s: TokenVectorEnv + KV-cached agent vs `generate` | {ours_tps:.0f} | {gen_tps:.0f} | "
        f"{ours_tps / gen_tps:.2f} (>= 0.8) |",
        f"| PPO pass over {tokens} per-token samples, 1 minibatch vs teacher-forced fwd+bwd (s) | "
        f"{statistics.median(one_mb):.3f} | {forced_s:.3f} | {statistics.median(one_mb) / forced_s:.2f} (<= 1.5) |",
        f"| the same in {args.minibatches} minibatches of whole environments, `algo.minibatch_by=env` (s) | "
        f"{statistics.median(by_env):.3f} | {forced_s:.3f} | {statistics.median(by_env) / forced_s:.2f} (<= 1.5) |",
        f"| the same in {args.minibatches} minibatches of shuffled samples, `minibatch_by=sample` (s) | "
        f"{statistics.median(many_mb):.3f} | {forced_s:.3f} | {statistics.median(many_mb) / forced_s:.2f} |",
        "",
    ]
    (ROOT / args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
