"""Documents from raw text and sentence-order pairs, against ALBERT's definitions."""

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
