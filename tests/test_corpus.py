"""Documents from raw text and sentence-order pairs, against ALBERT's definitions."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from albert_pytorch.data.corpus import read_documents, sentence_order_pairs

WIKITEXT = """
 = Lobster =

 The lobster is a crustacean . It lives in the sea !

 = = Habitat = =

 Lobsters hide under rocks . They come out at night ?

 = Crab =

 Crabs walk sideways .
"""


def test_documents_end_at_titles_and_blank_lines_and_drop_section_headings(tmp_path):
    path = tmp_path / "wiki.txt"
    path.write_text(WIKITEXT)
    documents = list(read_documents([path]))
    assert documents == [["The lobster is a crustacean .", "It lives in the sea !"],
                         ["Lobsters hide under rocks .", "They come out at night ?"], ["Crabs walk sideways ."]]
    lines = tmp_path / "phrases.txt"
    lines.write_text("a gripping film .\n\nflat and dull\n")
    assert list(read_documents([lines], line_by_line=True)) == [["a gripping film ."], ["flat and dull"]]


def test_the_shared_wikitext_reads_into_headingless_documents(shared_data):
    documents = list(read_documents([shared_data / "corpus" / "wikitext-2" / "valid.txt"]))
    assert len(documents) > 500
    assert not any(sentence.strip().startswith("= ") for document in documents for sentence in document)


def synthetic_documents(rng, count=800):
    """Documents of 1-8 sentences of 1-30 tokens; ids increase through each document, so order shows."""
    documents = []
    for _ in range(count):
        lengths = rng.integers(1, 31, size=int(rng.integers(1, 9)))
        ids = np.arange(5, 5 + lengths.sum())
        documents.append([chunk.tolist() for chunk in np.split(ids, np.cumsum(lengths)[:-1])])
    return documents


def test_sentence_order_pairs_fit_keep_order_and_balance_labels():
    rng = np.random.default_rng(0)
    pairs = [pair for document in synthetic_documents(rng) for pair in sentence_order_pairs(document, 64, rng)]
    assert len(pairs) > 1000
    for pair in pairs:
        assert pair.tokens_a and pair.tokens_b and len(pair.tokens_a) + len(pair.tokens_b) <= 64 - 3
        first, second = (pair.tokens_a, pair.tokens_b) if pair.sentence_order_label == 0 else (pair.tokens_b,
                                                                                               pair.tokens_a)
        assert max(first) < min(second)  # the two segments are consecutive text, in order or swapped
    assert np.mean([p.sentence_order_label for p in pairs]) == pytest.approx(0.5, abs=0.04)
    lengths = [len(p.tokens_a) + len(p.tokens_b) for p in pairs]
    assert max(lengths) == 61 and min(lengths) < 20  # full-length pairs, and shorter ones (short_seq_prob)


def test_a_one_sentence_document_is_split_inside_the_sentence():
    rng = np.random.default_rng(1)
    pairs = [sentence_order_pairs([list(range(5, 15))], 64, rng)[0] for _ in range(200)]
    assert all(sorted(p.tokens_a + p.tokens_b) == list(range(5, 15)) for p in pairs)
    assert 0.4 < np.mean([p.sentence_order_label for p in pairs]) < 0.6
    assert sentence_order_pairs([[7]], 64, rng) == []  # one token: no order to predict


def test_pair_shards_hold_exactly_the_pairs_as_model_inputs(tmp_path):
    from albert_pytorch.data.corpus import PairShards, build_pair_shards

    documents = [[f"s{d}_{i} " * (i + 2) for i in range(d % 5 + 1)] for d in range(40)]
    vocab: dict[str, int] = {}

    def encode(sentences):
        return [[vocab.setdefault(w, 5 + len(vocab)) for w in s.split()] for s in sentences]

    count = build_pair_shards(map(encode, documents), 32, tmp_path / "shards", seed=3)
    rng = np.random.default_rng(3)
    expected = [p for document in documents for p in sentence_order_pairs(encode(document), 32, rng)]
    shards = PairShards([tmp_path / "shards"], cls_id=2, sep_id=3)
    assert count == len(shards) == len(expected)
    for i, pair in enumerate(expected):
        item = shards[i]
        a, b = pair.tokens_a, pair.tokens_b
        assert item["input_ids"].tolist() == [2, *a, 3, *b, 3]
        assert item["token_type_ids"].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1)
        assert int(item["sentence_order_label"]) == pair.sentence_order_label
    assert shards.lengths.tolist() == [len(p.tokens_a) + len(p.tokens_b) + 3 for p in expected]


MEMORY_PROBE = """
import resource, sys
from albert_pytorch.data.corpus import PairShards, build_pair_shards, encoded_documents, read_documents
def encode(sentences):  # a fast stand-in for the tokenizer: the memory under test is the pipeline's
    return [[5 + (len(w) * 31 + ord(w[0])) % 1000 for w in s.split()] for s in sentences]
build_pair_shards(encoded_documents(read_documents([sys.argv[1]]), encode), 128, sys.argv[2])
build_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
shards = PairShards([sys.argv[2]], 2, 3)
total = sum(int(shards[i]["input_ids"].sum()) for i in range(0, len(shards), 3))
anonymous = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssAnon:")) // 1024
print(len(shards), build_peak, anonymous)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssAnon from /proc")
def test_memory_stays_flat_from_1_to_50_mb_of_text(tmp_path):
    """Building and reading the pairs of 50 MB of text takes no more memory than 1 MB's (file-backed pages
    of the memory map are the page cache's, which the OS reclaims, so reading is measured as RssAnon)."""
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghij"), size=int(n))) for n in rng.integers(2, 10, 5000)]
    block = "".join(" . ".join(" ".join(rng.choice(words, size=12)) for _ in range(4)) + " .\n\n"
                    for _ in range(2000))
    figures = {}
    for megabytes in (1, 50):
        corpus = tmp_path / f"corpus_{megabytes}.txt"
        with open(corpus, "w") as handle:
            for _ in range(max(1, megabytes * 1_000_000 // len(block))):
                handle.write(block)
        done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(corpus), str(tmp_path / f"shards_{megabytes}")],
                              capture_output=True, text=True, check=True, timeout=300)
        figures[megabytes] = [int(v) for v in done.stdout.split()]
    assert figures[50][0] > 40 * figures[1][0]  # pairs: the corpus did grow 50x
    assert figures[50][1] - figures[1][1] < 20  # build peak RSS, MB
    assert figures[50][2] - figures[1][2] < 20  # anonymous memory after reading, MB
