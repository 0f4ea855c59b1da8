"""Tiny random-init models built in the tests (fast, download-free): a ChatML causal LM policy and a
binary reward model trained for a few steps, each saved as a folder the real loaders read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

WORDS = ("hello thanks please answer question help warm cold bye love sending kind data noted the a is of and "
         "you we it this that here there water sky blue green tree car house music night day i feel sad happy "
         "how what why write poem story tell me about can cannot sorry").split()
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def make_tiny_policy(d: Path, seed: int = 0) -> Path:
    """A 2-layer Llama with a word-level ChatML tokenizer; eos = pad = <|im_end|> as in SmolLM2."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    # dict.fromkeys: "a" and "i" are words and letters; a repeat would get an id past the embedding table.
    tokens = dict.fromkeys(specials + ["system", "user", "assistant", "\n", *WORDS,
                                       *"abcdefghijklmnopqrstuvwxyz!.,?'❤"])
    vocab = {w: i for i, w in enumerate(tokens)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit()])
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<|im_start|>",
                                  eos_token="<|im_end|>", pad_token="<|im_end|>", model_max_length=512)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def make_tiny_bert_backbone(bb: Path) -> Path:
    """A random-init one-layer BERT with a one-logit head and a word-level vocabulary, saved in `bb`."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz!.,?"]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(dict.fromkeys(vocab))}, do_lower_case=True).save_pretrained(bb)
    BertForSequenceClassification(BertConfig(vocab_size=len(dict.fromkeys(vocab)), hidden_size=32,
                                             num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                             max_position_embeddings=128, num_labels=1)).save_pretrained(bb)
    return bb


def make_tiny_reward(d: Path, target: str = "love", seed: int = 0) -> Path:
    """A tiny BERT reward model trained for a few steps to like answers containing `target`."""
    from rluf.reward.train import RewardTrainConfig, train_reward

    d = Path(d)
    bb = make_tiny_bert_backbone(d / "backbone")
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(256):
        y = int(rng.random() < 0.3)
        words = list(rng.choice(WORDS[:20], size=rng.integers(3, 10)))
        rows.append({"prompt": " ".join(rng.choice(WORDS, size=4)),
                     "response": " ".join(words + ([target] if y else [])), "label": y})
    pq.write_table(pa.Table.from_pylist(rows[:192]), d / "train.parquet")
    pq.write_table(pa.Table.from_pylist(rows[192:]), d / "validation.parquet")
    cfg = RewardTrainConfig(backbone=str(bb), max_length=48, epochs=2, batch_size=32, learning_rate=2e-3,
                            warmup_ratio=0.0)
    train_reward(cfg, d / "train.parquet", d / "validation.parquet", d / "model")
    return d / "model"
