"""Builds a tiny random-weight Qwen3-architecture model, with no network.

    python tools/tiny_model.py [OUT_DIR]            # models/tiny-qwen3 by default
    python tools/tiny_model.py OUT --size bench     # ~25M parameters, for benchmarks

The tokenizer is a byte-level BPE trained here on text generated locally plus
the repository's Markdown files, wrapped as a ``PreTrainedTokenizerFast`` with
a ChatML chat template (the one Qwen uses, minus tools and thinking), so that
everything that takes "any causal LM with a chat template" can run on it.
The weights are random: the model produces nonsense, quickly and repeatably.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "models" / "tiny-qwen3"

# ChatML, as Qwen renders it (without tool calls and <think> handling).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

SIZES = {
    # Tests: builds and loads in well under a second.
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=1024,
    ),
    # The vLLM test tier: as small, but with head_dim 32 (vLLM's CPU attention takes 32 and up).
    "tiny-vllm": dict(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        vocab_size=1024,
    ),
    # Benchmarks: ~25M parameters, so that prefill cost dominates fixed overheads.
    "bench": dict(
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=64,
        vocab_size=4096,
    ),
    # Qwen3-0.6B's shapes (with a small vocabulary): GPU benchmarks at realistic cache sizes.
    "qwen3-0.6b": dict(
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=4096,
    ),
    # Qwen3-1.7B's shapes (small vocabulary, ~1.4B parameters; same KV cache per token as 0.6B):
    # GPU TTFT where the prefill, not the fixed per-call cost, dominates.
    "qwen3-1.7b": dict(
        hidden_size=2048,
        intermediate_size=6144,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=4096,
    ),
}

_WORDS = (
    "memory cube cache model user assistant the a of to and is in that it for on with as was at by "
    "tea coffee paris london graph vector search token layer key value prompt answer question time "
    "alice bob carol likes lives works reads writes remembers forgets today yesterday tomorrow"
).split()


def _corpus(seed: int) -> list[str]:
    """Local text only: generated sentences plus the repository's docs."""
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 16))) + "." for _ in range(3000)]
    for md in sorted(REPO_ROOT.glob("*.md")) + sorted((REPO_ROOT / "docs").glob("*.md")):
        try:
            lines.extend(md.read_text(encoding="utf-8").splitlines())
        except OSError:  # unreadable docs only shrink the corpus
            continue
    return lines


def build_tokenizer(vocab_size: int, seed: int = 0):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build(
    out_dir: Path | str = DEFAULT_OUT,
    *,
    size: str = "tiny",
    seed: int = 0,
    max_position_embeddings: int = 4096,
    rope_theta: float = 10000.0,
    dtype: str = "float32",
    init_device: str = "cpu",
) -> Path:
    """Writes config, safetensors weights and tokenizer to ``out_dir``; returns it.

    ``dtype`` is the dtype of the saved weights; ``init_device`` where the random weights
    are drawn ("cuda" makes a billion-parameter model in seconds instead of a minute)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dims = SIZES[size]
    tokenizer = build_tokenizer(dims["vocab_size"], seed)
    config = Qwen3Config(
        **{**dims, "vocab_size": len(tokenizer)},
        max_position_embeddings=max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype=dtype,
    )
    torch.manual_seed(seed)
    with torch.device(init_device):
        model = Qwen3ForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "README.md").write_text(
        f"Random-weight Qwen3-architecture model ({size}, seed {seed}) built by tools/tiny_model.py. "
        "Not trained: for tests and demos only.\n",
        encoding="utf-8",
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", nargs="?", default=str(DEFAULT_OUT))
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    path = build(args.out_dir, size=args.size, seed=args.seed)
    print(path)


if __name__ == "__main__":
    main()
