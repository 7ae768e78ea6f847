"""N-gram masking statistics over many sequences, against ALBERT's definition."""

import numpy as np
import pytest
from helpers import TEXTS

from albert_pytorch.data.masking import IGNORE_INDEX, MaskingSpec, mask_ngrams


@pytest.fixture(scope="module")
def sequences(tiny_tokenizer):
    """[CLS] A [SEP] B [SEP] pairs of about 100 tokens, from the test sentences in shifting order."""
    encoded = [tiny_tokenizer(text, add_special_tokens=False)["input_ids"] for text in TEXTS[:10]]
    rows = []
    for shift in range(10):
        order = encoded[shift:] + encoded[:shift]
        a = [t for sentence in order[:2] for t in sentence]
        b = [t for sentence in order[2:5] for t in sentence]
        rows.append(np.array([tiny_tokenizer.cls_token_id, *a, tiny_tokenizer.sep_token_id, *b,
                              tiny_tokenizer.sep_token_id]))
    return rows


def test_masking_statistics_follow_albert(tiny_tokenizer, sequences):
    spec = MaskingSpec.from_tokenizer(tiny_tokenizer)
    rng = np.random.default_rng(0)
    special = np.isin(sequences[0], list(spec.special_ids))
    candidates = chosen = masked = kept = 0
    for i in range(2000):
        ids = sequences[i % len(sequences)]
        out = mask_ngrams(ids, spec, rng)
        picked = out.labels != IGNORE_INDEX
        assert not picked[np.isin(ids, list(spec.special_ids))].any()  # never a special token
        assert np.array_equal(out.labels[picked], ids[picked]) and np.array_equal(out.input_ids[~picked], ids[~picked])
        for position in np.flatnonzero(picked):  # whole words: a chosen continuation's word start is chosen too
            start = position
            while not spec.word_start[ids[start]] and start > 0 and ids[start - 1] not in spec.special_ids:
                start -= 1
            assert picked[start]
        candidates += int((~np.isin(ids, list(spec.special_ids))).sum())
        chosen += int(picked.sum())
        masked += int((out.input_ids[picked] == spec.mask_id).sum())
        kept += int((out.input_ids[picked] == ids[picked]).sum())
    assert special.sum() == 3
    assert 0.14 < chosen / candidates < 0.155  # 15%, less a little where no whole word fits what is left
    assert masked / chosen == pytest.approx(0.8, abs=0.02)
    assert kept / chosen == pytest.approx(0.1 + 0.1 / len(spec.replacement_ids()), abs=0.02)


def test_ngram_lengths_follow_one_over_n():
    """n is drawn with p(n) = 1/n / (1 + 1/2 + 1/3), then shortened where it would pass the 15% budget
    (as in Google's code), which makes the chosen n-grams a little shorter than 6/11, 3/11, 2/11. With
    one-piece words, as albert-base's 30k vocabulary mostly has, that is about 0.59, 0.26, 0.15 (measured:
    0.589, 0.267, 0.144 on WikiText with albert-base's tokenizer); a 2x-longer n-gram law would fail."""
    spec = MaskingSpec(mask_id=4, special_ids=frozenset(range(5)), word_start=np.ones(1000, dtype=bool))
    rng = np.random.default_rng(0)
    lengths = []
    for _ in range(2000):
        ids = np.concatenate([[2], rng.integers(5, 1000, 126), [3]])
        lengths += mask_ngrams(ids, spec, rng).ngram_lengths
    shares = np.bincount(lengths, minlength=4)[1:] / len(lengths)
    assert shares == pytest.approx([6 / 11, 3 / 11, 2 / 11], abs=0.05)
    assert shares[0] > shares[1] > shares[2]


def test_masks_come_from_the_generator_alone(tiny_tokenizer, sequences):
    spec = MaskingSpec.from_tokenizer(tiny_tokenizer)

    def masks(seed):
        return mask_ngrams(sequences[0], spec, np.random.default_rng(seed)).input_ids

    assert np.array_equal(masks(7), masks(7))  # the same seed (a resumed batch): the same masks
    assert sum(not np.array_equal(masks(7), masks(seed)) for seed in range(8, 18)) >= 9  # another epoch: new ones


def test_batches_get_new_masks_each_epoch_and_the_same_after_a_resume(tmp_path, tiny_tokenizer):
    import torch
    from helpers import tiny_config
    from torch.utils.data import DataLoader

    from albert_pytorch import AlbertForPreTraining
    from albert_pytorch.data import LengthGroupedBatchSampler
    from albert_pytorch.data.corpus import PairShards, build_pair_shards
    from albert_pytorch.data.masking import MaskingCollator

    documents = [[TEXTS[(d + i) % 10] for i in range(d % 4 + 1)] for d in range(60)]
    build_pair_shards((tiny_tokenizer(d, add_special_tokens=False)["input_ids"] for d in documents), 64,
                      tmp_path / "pairs")
    shards = PairShards([tmp_path / "pairs"], tiny_tokenizer.cls_token_id, tiny_tokenizer.sep_token_id)
    sampler = LengthGroupedBatchSampler(shards.lengths, 4, seed=0)
    collator = MaskingCollator(tiny_tokenizer.pad_token_id, MaskingSpec.from_tokenizer(tiny_tokenizer))
    loader = DataLoader(shards, batch_sampler=sampler, collate_fn=collator)

    def epoch(number, start=0):
        sampler.set_epoch(number, start)
        return list(loader)

    def rows(batches):
        return {int(i): ids[mask == 1] for b in batches for i, ids, mask in zip(b["index"], b["input_ids"],
                                                                                   b["attention_mask"], strict=True)}

    first, second, resumed = epoch(0), epoch(1), epoch(0, start=3)
    for uninterrupted, replayed in zip(first[3:], resumed, strict=True):
        assert all(torch.equal(uninterrupted[k], replayed[k]) for k in uninterrupted)
    before, after = rows(first), rows(second)
    assert sum(not torch.equal(before[i], after[i]) for i in before) > 0.8 * len(shards)
    batch = first[0]
    assert (batch["labels"] != IGNORE_INDEX).any() and (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    model = AlbertForPreTraining.from_config(tiny_config())
    assert torch.isfinite(model(**{k: v for k, v in batch.items() if k != "index"}).loss)
