"""Build ``tests/fixtures/tiny-mistral.gguf``: a tiny, randomly initialised Mistral.

The explainer's tests start a real OpenAI-compatible server (llama-cpp-python) on this
file. Its answers are random text; what the tests check is the mechanics around it
(the JSON schema reaching the server and constraining the output, timeouts, retries,
fallbacks), so the model only has to load, tokenise any text and generate quickly.

What it is:

* a SentencePiece tokenizer (unigram, byte fallback, so every character of a prompt or
  a grammar can be encoded) trained on a few hundred generated lines that use the
  prompt's words: the artifact taxonomy, the evidence statistics, JSON punctuation;
* ``transformers.MistralForCausalLM`` with Mistral-7B-v0.3's shape shrunk (grouped
  query attention 4/2 heads, SwiGLU, RMSNorm, rope theta 1e6), random weights from a
  fixed seed, written with the ``gguf`` package as llama.cpp architecture ``llama``
  (which is how llama.cpp's own converter stores Mistral-7B: this build has no plain
  ``mistral`` architecture, only ``mistral3``/``mistral4``);
* Mistral's ``[INST] ... [/INST]`` chat template.

Deterministic: fixed seeds, single-threaded tokenizer training, sorted inputs. Run
``python scripts/make_tiny_gguf.py`` (needs torch, transformers, sentencepiece, gguf).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.artifacts import load_taxonomy  # noqa: E402

SEED = 1234
VOCAB_SIZE = 1024
HIDDEN = 64
LAYERS = 2
HEADS = 4
KV_HEADS = 2
INTERMEDIATE = 128
CONTEXT = 16384
ROPE_THETA = 1_000_000.0
RMS_EPS = 1e-5

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'system' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)

_WORD_TEXT = (
    "the image region detector heatmap evidence shows high frequency energy noise "
    "residual edge sharpness laplacian variance saturation luminance relative whole "
    "explain artifact fake real probably mostly generated camera photo texture "
    "lighting shadow reflection upper lower left right centre center middle share "
    "heat box position metadata absent proves nothing generator diffusion grid smooth "
    "sharp blur colour color skin fur eye consistent with against for verdict "
    "probability tier because compared measured value"
)
WORDS = _WORD_TEXT.split()


def corpus_lines(rng: random.Random) -> list[str]:
    """A few hundred lines in the prompt's vocabulary (names, keys, numbers, JSON)."""
    taxonomy = load_taxonomy()
    lines: list[str] = []
    for artifact in taxonomy.artifacts:
        lines += [artifact.name, artifact.key, artifact.description]
        lines.append(f'{{"{artifact.key}": "{artifact.description}"}}')
    for _ in range(300):
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 16))]
        number = f"{rng.random():.3f}"
        lines.append(" ".join(words) + f" {number} ({rng.uniform(0.2, 3):.2f}x).")
    lines += ["[INST] explain [/INST]", '{"a": "b", "c": "d"}', "- key: name", "1. 2. 3. 4."]
    return lines


def train_tokenizer(workdir: Path) -> Path:
    import sentencepiece as spm

    rng = random.Random(SEED)
    text = workdir / "corpus.txt"
    text.write_text("\n".join(corpus_lines(rng)) + "\n", encoding="utf-8")
    prefix = workdir / "tok"
    spm.set_random_generator_seed(SEED)
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(prefix),
        vocab_size=VOCAB_SIZE,
        model_type="unigram",
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        user_defined_symbols=["[INST]", "[/INST]"],
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


def tokenizer_tables(model_file: Path) -> tuple[list[bytes], list[float], list[int]]:
    """Pieces, scores and llama.cpp token types (as llama.cpp's converter maps them)."""
    import sentencepiece as spm
    from gguf import TokenType

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i).encode("utf-8"))
        scores.append(float(sp.get_score(i)))
        if sp.is_unknown(i):
            kind = TokenType.UNKNOWN
        elif sp.is_control(i):
            kind = TokenType.CONTROL
        elif sp.is_unused(i):
            kind = TokenType.UNUSED
        elif sp.is_byte(i):
            kind = TokenType.BYTE
        elif sp.id_to_piece(i) in ("[INST]", "[/INST]"):
            kind = TokenType.USER_DEFINED
        else:
            kind = TokenType.NORMAL
        types.append(int(kind))
    return tokens, scores, types


def token_biases(tokens: list[bytes], types: list[int]) -> np.ndarray:
    """Per-token logit offsets that make constrained JSON from a random model useful.

    A random model under a JSON grammar mostly answers ``{ }`` (the empty object is
    the shortest valid answer), or ``" "`` values, or never closes a string. The
    offsets push ``}`` and whitespace-only tokens down and ``"`` a little up, so an
    object gets a few properties of a few words each, and keep byte, control and
    unknown tokens out of the text. Everything else stays random. (Values tuned by
    looking at the answers to the explainer's prompt; ``"`` at +3 already gives
    mostly empty strings.)
    """
    from gguf import TokenType

    bias = np.zeros(len(tokens), dtype=np.float32)
    for i, (piece, kind) in enumerate(zip(tokens, types, strict=True)):
        text = piece.decode("utf-8")
        if kind != TokenType.NORMAL:
            bias[i] = -10.0
        elif text.strip("\u2581 ") == "" or "}" in text:
            bias[i] = -6.0
        elif text.lstrip("\u2581").startswith('"'):
            bias[i] = 2.0
    return bias


def random_weights(bias: np.ndarray) -> dict[str, np.ndarray]:
    """A randomly initialised MistralForCausalLM, tensors under llama.cpp's names.

    One change to the random init gives ``lm_head`` a per-token bias, which Mistral
    does not have: hidden dimension 0 is a constant 1 in every token embedding, and no
    attention or MLP block writes to it, so after the final RMSNorm it is a positive
    constant-ish value and ``lm_head[:, 0]`` scales it into ``bias`` (see
    :func:`token_biases`).
    """
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    vocab_size = len(bias)
    torch.manual_seed(SEED)
    config = MistralConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=CONTEXT,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        rms_norm_eps=RMS_EPS,
        sliding_window=None,
        tie_word_embeddings=False,
        initializer_range=0.2,
    )
    model = MistralForCausalLM(config).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 1.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0, :] = 0.0
            layer.mlp.down_proj.weight[0, :] = 0.0
        generator = torch.Generator().manual_seed(SEED)
        probe = torch.randint(3, vocab_size, (4, 128), generator=generator)
        unit = float(model.model(probe).last_hidden_state[..., 0].mean())
        model.lm_head.weight[:, 0] = torch.from_numpy(bias) / unit
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}

    def permute(w: np.ndarray, heads: int) -> np.ndarray:
        # HF stores rotary halves apart; llama.cpp interleaves them (as its converter does).
        return (
            w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape)
        )

    out = {
        "token_embd.weight": state["model.embed_tokens.weight"],
        "output_norm.weight": state["model.norm.weight"],
        "output.weight": state["lm_head.weight"],
    }
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        out[f"blk.{i}.attn_norm.weight"] = state[p + "input_layernorm.weight"]
        out[f"blk.{i}.attn_q.weight"] = permute(state[p + "self_attn.q_proj.weight"], HEADS)
        out[f"blk.{i}.attn_k.weight"] = permute(state[p + "self_attn.k_proj.weight"], KV_HEADS)
        out[f"blk.{i}.attn_v.weight"] = state[p + "self_attn.v_proj.weight"]
        out[f"blk.{i}.attn_output.weight"] = state[p + "self_attn.o_proj.weight"]
        out[f"blk.{i}.ffn_norm.weight"] = state[p + "post_attention_layernorm.weight"]
        out[f"blk.{i}.ffn_gate.weight"] = state[p + "mlp.gate_proj.weight"]
        out[f"blk.{i}.ffn_up.weight"] = state[p + "mlp.up_proj.weight"]
        out[f"blk.{i}.ffn_down.weight"] = state[p + "mlp.down_proj.weight"]
    return out


def write_gguf(path: Path, model_file: Path) -> None:
    import gguf

    tokens, scores, types = tokenizer_tables(model_file)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-mistral (random weights, test fixture)")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(INTERMEDIATE)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_rope_freq_base(ROPE_THETA)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    for name, tensor in random_weights(token_biases(tokens, types)).items():
        # Norms stay f32 (llama.cpp requires it); matrices in f16 halve the file.
        data = tensor.astype(np.float32 if tensor.ndim == 1 else np.float16)
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=ROOT / "tests" / "fixtures" / "tiny-mistral.gguf"
    )
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_file = train_tokenizer(Path(tmp))
        write_gguf(args.out, model_file)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
