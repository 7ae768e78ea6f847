"""ALBERT's SentencePiece tokenizer, through Hugging Face's implementation (not a copy of our own)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

SPIECE_NAME = "spiece.model"
TOKENIZER_FILES = (SPIECE_NAME, "tokenizer.json")


class TokenizerError(ValueError):
    """No usable tokenizer where one was expected."""


def load_tokenizer(model_dir: str | os.PathLike):
    """The tokenizer saved in a model directory (`spiece.model` or `tokenizer.json`)."""
    from transformers import AlbertTokenizer

    model_dir = Path(model_dir)
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        raise TokenizerError(f"{model_dir}: no tokenizer found (looked for {', '.join(TOKENIZER_FILES)}). "
                             "A model directory needs the tokenizer it was trained with.")
    return AlbertTokenizer.from_pretrained(str(model_dir))


def encode(tokenizer, texts_a: Sequence[str], texts_b: Sequence[str] | None,
           max_seq_length: int) -> dict[str, list[list[int]]]:
    """Unpadded `input_ids` and `token_type_ids` for single sentences or pairs.

    Pairs are cut longest-first, so both segments keep their [SEP] and segment ids stay right.
    """
    if max_seq_length < (3 if texts_b is not None else 2):
        raise ValueError(f"max_seq_length={max_seq_length} leaves no room for text besides [CLS]/[SEP]")
    encoded = tokenizer(list(texts_a), None if texts_b is None else list(texts_b), truncation="longest_first",
                        max_length=max_seq_length, padding=False, return_token_type_ids=True,
                        return_attention_mask=False)
    return {"input_ids": encoded["input_ids"], "token_type_ids": encoded["token_type_ids"]}


def fingerprint(tokenizer) -> str:
    """A hash of the tokenizer's full definition: feature caches are keyed on it."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]


def train_sentencepiece(texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int = 1000) -> Path:
    """Train a small ALBERT-style SentencePiece model on `texts`; returns the `spiece.model` path.

    The special pieces sit at ALBERT's ids (<pad> 0, <unk> 1, [CLS] 2, [SEP] 3, [MASK] 4) and
    text is normalized as albert-base-v2's is (nmt_nfkc, lower-cased by the tokenizer).
    """
    import sentencepiece as spm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(t.lower() for t in texts) + "\n", encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(Path(tmp) / "spiece"), vocab_size=vocab_size,
            model_type="unigram", normalization_rule_name="nmt_nfkc", character_coverage=1.0,
            pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
            hard_vocab_limit=False, num_threads=1, minloglevel=2)
        target = out_dir / SPIECE_NAME
        os.replace(Path(tmp) / "spiece.model", target)
    return target
