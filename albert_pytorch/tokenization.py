"""ALBERT's SentencePiece tokenizer, through Hugging Face's implementation (not a copy of our own)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from .errors import UsageError
from .io import atomic_write_text, text_files
from .rundir import TOKENIZER, TRAINING, OutputFolder, claimed, describe

logger = logging.getLogger("albert_pytorch")

SPIECE_NAME = "spiece.model"
TOKENIZER_FILES = (SPIECE_NAME, "tokenizer.json")


class TokenizerError(ValueError):
    """No usable tokenizer where one was expected."""


def load_tokenizer(model_dir: str | os.PathLike):
    """The tokenizer saved in a model directory (`spiece.model` or `tokenizer.json`)."""
    from transformers import AlbertTokenizer

    model_dir = Path(model_dir)
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        if (model_dir / TRAINING.marker).is_file() and not (model_dir / TRAINING.finished).is_file():
            # a run's folder, before the run saved its model
            raise TokenizerError(f"{model_dir} holds {describe(model_dir, TRAINING)}, not a model yet: finish it "
                                 "with --resume_from_checkpoint latest, or load one of its checkpoint-<step> folders")
        raise TokenizerError(f"{model_dir}: no tokenizer found (looked for {', '.join(TOKENIZER_FILES)}). "
                             "A model directory needs the tokenizer it was trained with.")
    _check_tokenizer_files(model_dir)
    return AlbertTokenizer.from_pretrained(str(model_dir))


def _check_tokenizer_files(model_dir: Path) -> None:
    """Each tokenizer file there, read on its own: a damaged one is named, not reported as whatever transformers
    tried next (it suggests installing tiktoken)."""
    import sentencepiece as spm
    from tokenizers import Tokenizer

    spiece, definition = model_dir / SPIECE_NAME, model_dir / "tokenizer.json"
    if spiece.is_file():
        try:
            spm.SentencePieceProcessor(model_file=str(spiece))
        except (RuntimeError, OSError) as err:
            raise TokenizerError(f"{spiece}: not a SentencePiece model ({str(err).strip()}); replace it with the "
                                 "spiece.model the model was trained with") from None
    if definition.is_file():
        try:
            Tokenizer.from_file(str(definition))
        except Exception as err:  # the Rust library raises its own Exception for any unreadable file
            raise TokenizerError(f"{definition}: not a tokenizers definition ({err}); replace it, or delete it to "
                                 f"rebuild it from {SPIECE_NAME}") from None


def save_tokenizer_files(tokenizer, source_dir: str | os.PathLike, directory: str | os.PathLike,
                         model_max_length: int | None = None) -> None:
    """The tokenizer's files in `directory`, with the source's spiece.model for slow (SentencePiece) loaders,
    as transformers' AutoTokenizer should read them: giving token_type_ids (ALBERT's pairs need them; its
    tokenizer class leaves them out unless told) and cutting at `model_max_length` (the model's positions)."""
    tokenizer.save_pretrained(str(directory))
    # the definition as trained, without the truncation and padding of the last call (a transformers user
    # loading it would otherwise cut every input at this run's training length)
    atomic_write_text(Path(directory) / "tokenizer.json", definition(tokenizer))
    settings_file = Path(directory) / "tokenizer_config.json"
    settings = json.loads(settings_file.read_text(encoding="utf-8"))
    settings["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
    if model_max_length is not None:
        settings["model_max_length"] = model_max_length
    atomic_write_text(settings_file, json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
    spiece = Path(source_dir) / SPIECE_NAME
    if spiece.is_file():
        shutil.copyfile(spiece, Path(directory) / SPIECE_NAME)


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


def encode_inputs(tokenizer, inputs: Sequence[tuple[str, str | None]], max_seq_length: int) -> dict[str, list]:
    """`encode` for a mix of single texts and (text, pair)s, each encoded as what it is (a single text is never
    a pair with an empty second text), in input order."""
    singles = [i for i, (_, pair) in enumerate(inputs) if pair is None]
    pairs = [i for i, (_, pair) in enumerate(inputs) if pair is not None]
    rows: list = [None] * len(inputs)
    for indices, is_pair in ((singles, False), (pairs, True)):
        if indices:
            encoded = encode(tokenizer, [inputs[i][0] for i in indices],
                             [inputs[i][1] for i in indices] if is_pair else None, max_seq_length)
            for position, i in enumerate(indices):
                rows[i] = (encoded["input_ids"][position], encoded["token_type_ids"][position])
    return {"input_ids": [ids for ids, _ in rows], "token_type_ids": [types for _, types in rows]}


def definition(tokenizer) -> str:
    """The tokenizer's tokenizer.json: its vocabulary, normalizer and pre/post-processing, without the truncation
    and padding that transformers sets on it per call."""
    return json.dumps(_as_trained(tokenizer), ensure_ascii=False, indent=2)


def fingerprint(tokenizer) -> str:
    """A hash of the tokenizer's definition: caches are keyed on it (compact JSON: an indented dump of a 30,000
    piece vocabulary takes Python's slow encoder a quarter of a second)."""
    return hashlib.sha256(json.dumps(_as_trained(tokenizer), ensure_ascii=False).encode()).hexdigest()[:16]


def _as_trained(tokenizer) -> dict:
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    data["truncation"] = data["padding"] = None
    return data


def backend_copy(tokenizer):
    """A copy of the Rust tokenizer behind a transformers one, without truncation or padding: transformers'
    wrapper costs more per call than the encoding does, and sets truncation on the shared tokenizer per call,
    which other users of it must never see. Picklable, so it travels to worker processes."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json.dumps(_as_trained(tokenizer), ensure_ascii=False))


def train_sentencepiece(texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int = 1000,
                        max_sentences: int = 0, seed: int = 42) -> Path:
    """Train an ALBERT-style SentencePiece unigram model on `texts`; returns the `spiece.model` path.

    The special pieces sit at ALBERT's ids (<pad> 0, <unk> 1, [CLS] 2, [SEP] 3, [MASK] 4) and text is
    normalized as albert-base-v2's is (nmt_nfkc, lower-cased by the tokenizer). Texts are streamed to disk,
    not held in memory; `max_sentences` > 0 trains on that many lines sampled from them.
    """
    import sentencepiece as spm

    out_dir = Path(out_dir)
    spm.set_random_generator_seed(seed)  # the sentence sampling
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        lines = 0
        with open(corpus, "w", encoding="utf-8") as handle:
            for text in texts:
                handle.write(text.lower() + "\n")
                lines += 1
        if not lines:
            raise TokenizerError("the text is empty (every line blank): nothing to learn a vocabulary from")
        try:
            spm.SentencePieceTrainer.train(
                input=str(corpus), model_prefix=str(Path(tmp) / "spiece"), vocab_size=vocab_size,
                model_type="unigram", normalization_rule_name="nmt_nfkc", character_coverage=1.0,
                pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
                hard_vocab_limit=False, num_threads=1, minloglevel=2, input_sentence_size=max_sentences,
                shuffle_input_sentence=max_sentences > 0)
        except RuntimeError as err:
            raise TokenizerError(_sentencepiece_problem(str(err), vocab_size)) from None
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / SPIECE_NAME
        os.replace(Path(tmp) / "spiece.model", target)
    return target


def _sentencepiece_problem(message: str, vocab_size: int) -> str:
    """SentencePiece's INTERNAL check failures, said as what is wrong and what to change."""
    needed = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message)
    if needed:
        return (f"--vocab_size {vocab_size} is too small: the text has {needed.group(2)} distinct characters and "
                "special pieces, and each needs a piece of its own. Give a larger --vocab_size.")
    return f"SentencePiece could not learn a vocabulary from this text ({message.strip().splitlines()[-1]})"


def text_lines(inputs: Sequence[str | os.PathLike]) -> Iterator[str]:
    """The non-blank lines of text files; a folder stands for every .txt file under it, in name order."""
    for path in text_files(inputs):
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError as err:
                    raise TokenizerError(f"{path}:{number}: not UTF-8 text ({err.reason} at byte {err.start} of "
                                         "the line)") from None
                if line:
                    yield line


def build_tokenizer(inputs: Sequence[str | os.PathLike], output_dir: str | os.PathLike, vocab_size: int,
                    max_sentences: int = 0, seed: int = 42, overwrite: bool = False) -> dict:
    """`python3 -m albert_pytorch tokenizer`: a tokenizer directory that transformers' AlbertTokenizer,
    and so `train`, `pretrain`, `predict` and the deployment chain, load as a model directory's own.

    The whole set of files is made in a temporary folder, then moved in: a used --output_dir is refused
    unless `overwrite`, which replaces an earlier tokenizer's files (and only those) there.
    """
    if vocab_size < 6:
        raise UsageError(f"--vocab_size {vocab_size}: ALBERT's five special pieces alone take 5")
    with claimed(output_dir):
        try:
            files = text_files(inputs)
        except FileNotFoundError as err:
            raise UsageError(str(err)) from None
        folder = OutputFolder.check(output_dir, TOKENIZER, overwrite)
        with tempfile.TemporaryDirectory() as tmp:
            train_sentencepiece(text_lines(files), tmp, vocab_size, max_sentences, seed)
            tokenizer = load_tokenizer(tmp)
            tokenizer.save_pretrained(tmp)
            with folder.opened() as directory:
                for made in Path(tmp).iterdir():
                    shutil.move(made, directory / made.name)
    if len(tokenizer) < vocab_size:
        logger.warning("the text allows %d pieces, fewer than --vocab_size %d: SentencePiece found no more distinct "
                       "pieces worth keeping in it (more text gives more)", len(tokenizer), vocab_size)
    specials = {token: tokenizer.convert_tokens_to_ids(token) for token in ("<pad>", "<unk>", "[CLS]", "[SEP]",
                                                                            "[MASK]")}
    return {"output_dir": str(output_dir), "vocab_size": len(tokenizer), "special_ids": specials}
