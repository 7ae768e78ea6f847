import pytest
import torch
from helpers import TEXTS

from albert_pytorch.data import (
    Collator,
    EvalShardSampler,
    Example,
    LengthGroupedBatchSampler,
    get_task,
    load_or_build_features,
)
from albert_pytorch.data.features import cache_key

SST2 = get_task("SST-2")


def examples(n=40):
    return [Example(f"train-{i}", TEXTS[i % len(TEXTS)] + " x" * (i % 7), None, i % 2, i + 2) for i in range(n)]


def test_features_are_cached_and_keyed_on_everything(tiny_tokenizer, tmp_path):
    rows = examples()
    first = load_or_build_features(SST2, "train", rows, tiny_tokenizer, 32, tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    again = load_or_build_features(SST2, "train", rows, tiny_tokenizer, 32, tmp_path)
    assert torch.equal(first.ids, again.ids) and torch.equal(first.labels, again.labels)
    key = cache_key(SST2, "train", rows, tiny_tokenizer, 32)
    assert key != cache_key(SST2, "train", rows, tiny_tokenizer, 16)
    assert key != cache_key(SST2, "dev", rows, tiny_tokenizer, 32)
    assert key != cache_key(get_task("CoLA"), "train", rows, tiny_tokenizer, 32)
    edited = rows[:-1] + [Example("x", "another text entirely", None, 0, 99)]
    assert key != cache_key(SST2, "train", edited, tiny_tokenizer, 32)


def test_corrupt_cache_is_rebuilt(tiny_tokenizer, tmp_path):
    rows = examples()
    built = load_or_build_features(SST2, "train", rows, tiny_tokenizer, 32, tmp_path)
    next(tmp_path.glob("*.safetensors")).write_bytes(b"garbage")
    rebuilt = load_or_build_features(SST2, "train", rows, tiny_tokenizer, 32, tmp_path)
    assert torch.equal(built.ids, rebuilt.ids)


def test_collator_pads_each_batch_to_its_longest_row(tiny_tokenizer, tmp_path):
    features = load_or_build_features(SST2, "train", examples(), tiny_tokenizer, 32, tmp_path)
    rows = [features[i] for i in (0, 5, 6)]
    batch = Collator(pad_token_id=0)(rows)
    longest = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == (3, longest)
    assert batch["attention_mask"].sum(1).tolist() == [len(r["input_ids"]) for r in rows]
    assert batch["index"].tolist() == [0, 5, 6]
    assert Collator(0, pad_to_multiple_of=8)(rows)["input_ids"].shape[1] % 8 == 0


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_training_batches_cover_data_and_agree_across_ranks(world_size):
    lengths = torch.randint(3, 60, (101,))
    samplers = [LengthGroupedBatchSampler(lengths, 8, seed=1, world_size=world_size, rank=r) for r in range(world_size)]
    per_rank = [list(s) for s in samplers]
    assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) == len(samplers[0])
    seen = [i for batches in per_rank for batch in batches for i in batch]
    assert set(seen) == set(range(101)) and len(seen) == 101 + (-101 % world_size)
    # grouping really groups: a batch's rows are closer in length than random rows would be
    spread = torch.tensor([float(lengths[b].max() - lengths[b].min()) for b in per_rank[0]]).mean()
    assert spread < (lengths.max() - lengths.min()) / 3


def test_training_batches_are_deterministic_per_epoch_and_resumable():
    lengths = torch.randint(3, 60, (64,))
    sampler = LengthGroupedBatchSampler(lengths, 4, seed=7)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    sampler.set_epoch(2)
    assert list(sampler) != epoch1
    sampler.set_epoch(1, start_batch=5)
    assert list(sampler) == epoch1[5:] and len(sampler) == len(epoch1) - 5


@pytest.mark.parametrize("world_size,batch_size", [(1, 7), (2, 440), (3, 5), (4, 1)])
def test_eval_shards_score_every_example_exactly_once(world_size, batch_size):
    lengths = torch.randint(3, 60, (872,))
    seen = [i for r in range(world_size) for batch in EvalShardSampler(lengths, batch_size, world_size, r)
            for i in batch]
    assert sorted(seen) == list(range(872))
