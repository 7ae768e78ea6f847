"""The embedded default: a small SST-2-style sample shipped with the package, so the main job runs
on a fresh clone with no data and no pretrained model.

The 520 sentences in `sample_data/SST-2` were written for this project (400 train, 120 dev). The
tokenizer and model config are made here, by our own code, the first time they are needed; the
training recipe for them is `config.SAMPLE_RECIPE`.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from .config import AlbertConfig
from .data.glue import get_task, read_file
from .tokenization import load_tokenizer, train_sentencepiece


def sample_data_dir() -> Path:
    return Path(str(resources.files("albert_pytorch") / "sample_data" / "SST-2"))


def prepare_sample_model(model_dir: str | os.PathLike) -> Path:
    """A directory with a SentencePiece tokenizer trained on the sample and a tiny ALBERT config.json."""
    model_dir = Path(model_dir)
    if (model_dir / "config.json").is_file() and (model_dir / "spiece.model").is_file():
        return model_dir
    examples, _ = read_file(get_task("SST-2"), sample_data_dir() / "train.tsv", "train")
    train_sentencepiece([e.text_a for e in examples], model_dir, vocab_size=400)
    vocab_size = len(load_tokenizer(model_dir))
    config = AlbertConfig(vocab_size=vocab_size, embedding_size=32, hidden_size=64, num_hidden_layers=2,
                          num_attention_heads=2, intermediate_size=128, max_position_embeddings=128)
    config.save_pretrained(model_dir)
    return model_dir
