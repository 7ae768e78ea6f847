import pytest

from albert_pytorch.tokenization import TokenizerError, encode, fingerprint, load_tokenizer, save_tokenizer_files


def test_real_albert_base_v2_tokenizer(shared_data):
    tokenizer = load_tokenizer(shared_data / "albert_base_v2")
    assert encode(tokenizer, ["Hello, my dog is cute"], None, 128)["input_ids"] == [
        [2, 10975, 15, 51, 1952, 25, 10901, 3]]


def test_tiny_tokenizer_has_albert_special_ids(tiny_tokenizer):
    assert (tiny_tokenizer.pad_token_id, tiny_tokenizer.unk_token_id, tiny_tokenizer.cls_token_id,
            tiny_tokenizer.sep_token_id, tiny_tokenizer.mask_token_id) == (0, 1, 2, 3, 4)


def test_pairs_truncate_longest_first_and_keep_both_separators(tiny_tokenizer):
    long_a = "the acting shines from start to finish . " * 5
    out = encode(tiny_tokenizer, [long_a], ["a dull movie ."], max_seq_length=24)
    ids, types = out["input_ids"][0], out["token_type_ids"][0]
    assert len(ids) == 24 and ids[0] == 2 and ids.count(3) == 2 and ids[-1] == 3
    second = ids.index(3) + 1
    assert types == [0] * second + [1] * (24 - second)
    # the short second segment survives whole: only the longer one was cut
    assert ids[second:-1] == encode(tiny_tokenizer, ["a dull movie ."], None, 64)["input_ids"][0][1:-1]


def test_single_sentences_truncate_with_sep_last(tiny_tokenizer):
    ids = encode(tiny_tokenizer, ["warm , funny and smart . " * 10], None, 8)["input_ids"][0]
    assert len(ids) == 8 and ids[0] == 2 and ids[-1] == 3


def test_fingerprint_tells_tokenizers_apart(tiny_tokenizer, shared_data):
    assert fingerprint(tiny_tokenizer) != fingerprint(load_tokenizer(shared_data / "albert_base_v2"))


def test_missing_tokenizer_is_named(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer found"):
        load_tokenizer(tmp_path)


def test_tokenizer_command_makes_a_directory_transformers_loads(tmp_path):
    import transformers
    from helpers import TEXTS

    from albert_pytorch.cli import main

    corpus = tmp_path / "corpus"
    (corpus / "part").mkdir(parents=True)
    (corpus / "a.txt").write_text("\n\n".join(TEXTS[:40]) + "\n")
    (corpus / "part" / "b.txt").write_text("\n".join(TEXTS[40:]) + "\n")
    with pytest.raises(SystemExit) as done:
        main(["tokenizer", "--input", str(corpus), "--vocab_size", "120", "--output_dir", str(tmp_path / "tok")])
    assert done.value.code == 0
    tokenizer = transformers.AlbertTokenizer.from_pretrained(tmp_path / "tok")
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2,
                                                                                                            3, 4]
    ids = tokenizer("The film is a JOY to watch .")["input_ids"]
    assert ids[0] == 2 and ids[-1] == 3 and 1 not in ids  # lower-cased, every piece known
    assert ids == load_tokenizer(tmp_path / "tok")("the film is a joy to watch .")["input_ids"]


def tokenizer_cli(*args) -> int:
    from albert_pytorch.cli import main

    with pytest.raises(SystemExit) as done:
        main(["tokenizer", *map(str, args)])
    return done.value.code


def test_a_used_folder_is_refused_and_overwrite_writes_the_whole_new_set(tmp_path, caplog):
    import sentencepiece as spm
    import transformers
    from helpers import TEXTS

    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("\n".join(TEXTS) + "\n")
    second.write_text("\n".join(t.upper().replace(" ", " zz") for t in TEXTS) + "\n")
    model = tmp_path / "model"
    assert tokenizer_cli("--input", first, "--vocab_size", "120", "--output_dir", model) == 0
    (model / "notes.txt").write_text("mine")  # a file of the user's own
    before = (model / "tokenizer.json").read_bytes()
    assert tokenizer_cli("--input", second, "--vocab_size", "90", "--output_dir", model) == 2
    assert "is not empty" in caplog.text and (model / "tokenizer.json").read_bytes() == before
    assert tokenizer_cli("--input", second, "--vocab_size", "90", "--output_dir", model, "--overwrite_output_dir") == 0
    fresh = tmp_path / "fresh"
    assert tokenizer_cli("--input", second, "--vocab_size", "90", "--output_dir", fresh) == 0
    # the whole set is the new one's, nothing of the old is kept (spiece.model also records its temporary path)
    assert (model / "tokenizer.json").read_bytes() == (fresh / "tokenizer.json").read_bytes()
    size = len(load_tokenizer(fresh))
    pieces = [spm.SentencePieceProcessor(model_file=str(d / "spiece.model")).id_to_piece(list(range(size)))
              for d in (model, fresh)]
    assert pieces[0] == pieces[1]
    assert len(transformers.AlbertTokenizer.from_pretrained(model)) == len(load_tokenizer(fresh))
    assert (model / "notes.txt").read_text() == "mine" and not (model / ".previous-run").exists()
    (model / "config.json").write_text("{}")  # now a model's folder: its tokenizer is its embeddings' own
    before = (model / "tokenizer.json").read_bytes()
    assert tokenizer_cli("--input", first, "--vocab_size", "120", "--output_dir", model, "--overwrite_output_dir") == 2
    assert "holds a model (config.json or weights)" in caplog.text and (model / "tokenizer.json").read_bytes() == before


@pytest.mark.parametrize("text, vocab_size, message", [
    ("\n\n  \n", 100, "the text is empty"),
    ("the film is a joy to watch .\nwarm , funny and smart .\n", 12, "--vocab_size 12 is too small: the text has"),
])
def test_sentencepiece_failures_say_what_to_change_and_leave_no_folder(tmp_path, caplog, text, vocab_size, message):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text)
    assert tokenizer_cli("--input", corpus, "--vocab_size", vocab_size, "--output_dir", tmp_path / "tok") == 1
    assert message in caplog.text and "INTERNAL" not in caplog.text
    assert not (tmp_path / "tok").exists()


@pytest.mark.parametrize("damage", ["random bytes", "a link to a text file"])
def test_a_damaged_spiece_model_is_named_with_what_is_wrong(tmp_path, damage):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    if damage == "random bytes":
        (model_dir / "spiece.model").write_bytes(bytes(range(256)) * 20)
    else:
        (tmp_path / "notes.txt").write_text("not a tokenizer\n")
        (model_dir / "spiece.model").symlink_to(tmp_path / "notes.txt")
    with pytest.raises(TokenizerError, match=f"{model_dir / 'spiece.model'}: not a SentencePiece model"):
        load_tokenizer(model_dir)


def test_saved_tokenizer_json_carries_no_training_length(tiny_tokenizer_dir, tmp_path):
    import json

    tokenizer = load_tokenizer(tiny_tokenizer_dir)
    encode(tokenizer, ["a long enough sentence to cut"], None, 5)  # sets truncation on the shared tokenizer
    save_tokenizer_files(tokenizer, tiny_tokenizer_dir, tmp_path)
    saved = json.loads((tmp_path / "tokenizer.json").read_text())
    assert saved["truncation"] is None and saved["padding"] is None
    assert fingerprint(load_tokenizer(tmp_path)) == fingerprint(tokenizer)


def test_a_text_with_fewer_pieces_than_asked_says_so(tmp_path, caplog):
    from helpers import TEXTS

    from albert_pytorch.tokenization import build_tokenizer

    text = tmp_path / "text.txt"
    text.write_text("\n".join(TEXTS) + "\n")
    made = build_tokenizer([text], tmp_path / "tok", vocab_size=5000)
    assert made["vocab_size"] < 5000
    assert f"the text allows {made['vocab_size']} pieces, fewer than --vocab_size 5000" in caplog.text
