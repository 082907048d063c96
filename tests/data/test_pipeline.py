"""grain pipeline: sharding, per-epoch shuffling, exact resume; the generated shapes dataset."""

import numpy as np
import pytest

from mmjax.data.pipeline import (
    COLOURS,
    SHAPES,
    ArraySource,
    make_dataset,
    make_generated_dataset,
    make_iterator,
    per_process_batch_size,
    prepare_batch,
    steps_per_epoch,
)
from mmjax.data.tokenizer import BOS_ID, EOS_ID, WordTokenizer

N, BATCH = 24, 4


def index_source(n=N):
    """Examples that carry their own index, so batches can be traced back to the source."""
    return ArraySource({"index": np.arange(n), "image": np.zeros((n, 2, 2, 3), np.uint8)})


def epoch_indices(shard_index=0, shard_count=1, seed=0, epochs=1):
    ds = make_dataset(index_source(), batch_size=BATCH, seed=seed, shard_index=shard_index,
                      shard_count=shard_count, num_epochs=epochs)
    return [b["index"].tolist() for b in ds]


def test_shards_disjoint_and_cover_every_epoch():
    shards = [epoch_indices(i, 2, epochs=2) for i in range(2)]
    per_epoch = steps_per_epoch(N, BATCH, shard_count=2)
    assert per_epoch == 3 and all(len(s) == 2 * per_epoch for s in shards)
    for epoch in range(2):
        parts = [np.concatenate(s[epoch * per_epoch:(epoch + 1) * per_epoch]) for s in shards]
        assert not set(parts[0]) & set(parts[1])
        assert sorted(np.concatenate(parts)) == list(range(N))


def test_uneven_source_gives_every_shard_the_same_number_of_steps():
    ds = [make_dataset(index_source(27), batch_size=2, seed=0, shard_index=i, shard_count=4, num_epochs=1)
          for i in range(4)]
    assert {len(d) for d in ds} == {steps_per_epoch(27, 2, 4)} == {3}


def test_same_seed_same_order_new_epoch_new_order():
    first, again = epoch_indices(seed=3, epochs=2), epoch_indices(seed=3, epochs=2)
    assert first == again
    epoch0, epoch1 = np.concatenate(first[:6]), np.concatenate(first[6:])
    assert sorted(epoch0) == sorted(epoch1) == list(range(N))
    assert not np.array_equal(epoch0, epoch1)
    assert epoch_indices(seed=4) != first[:6]


def test_set_state_resumes_exactly():
    ds = make_dataset(index_source(), batch_size=BATCH, seed=1)  # one process: the whole source
    iterator = make_iterator(ds)
    for _ in range(8):  # past the first epoch boundary
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator)["index"].tolist() for _ in range(5)]
    resumed = make_iterator(ds, state=state)
    assert [next(resumed)["index"].tolist() for _ in range(5)] == expected
    fresh = make_iterator(ds)
    fresh.set_state(state)
    assert next(fresh)["index"].tolist() == expected[0]


def test_generated_dataset_batches_are_model_ready():
    data = make_generated_dataset(48, image_size=16, seed=0)
    assert len(data.class_names) == len(COLOURS) * len(SHAPES) >= 12
    labels, captions = data.columns["label"], data.captions
    for i in range(8):
        colour, shape = data.class_names[labels[i]].split()
        assert f" {colour} " in f" {captions[i]} " and f" {shape}" in captions[i]
    tok = WordTokenizer.build(data.captions)
    ds = make_dataset(data, batch_size=8, seed=0, tokenizer=tok, max_len=12, shard_index=0, shard_count=1)
    batch = ds[0]
    assert set(batch) == {"image", "tokens", "label", "colour", "shape", "size"}
    assert batch["image"].dtype == np.float32 and batch["image"].shape == (8, 16, 16, 3)
    assert 0 <= batch["image"].min() and batch["image"].max() <= 1
    assert batch["tokens"].dtype == np.int32 and batch["tokens"].shape == (8, 12)
    assert (batch["tokens"][:, 0] == BOS_ID).all() and ((batch["tokens"] == EOS_ID).sum(1) == 1).all()
    np.testing.assert_array_equal(batch["label"], batch["colour"] * len(SHAPES) + batch["shape"])


def test_generated_dataset_is_seeded():
    a, b = make_generated_dataset(16, 16, seed=5), make_generated_dataset(16, 16, seed=5)
    np.testing.assert_array_equal(a.columns["image"], b.columns["image"])
    assert a.captions == b.captions
    assert not np.array_equal(a.columns["image"], make_generated_dataset(16, 16, seed=6).columns["image"])


def test_prepare_batch_pretokenized_and_errors():
    batch = prepare_batch({"image": np.ones((2, 3, 3, 3)), "caption": np.ones((2, 5), np.int64),
                           "note": np.array([b"x", b"y"])})
    assert set(batch) == {"image", "tokens"} and batch["tokens"].dtype == np.int32
    with pytest.raises(ValueError, match="no tokenizer"):
        prepare_batch({"caption": np.array(["a red square", "a blue circle"])})
    with pytest.raises(ValueError, match="batch_size=100 is invalid"):
        make_dataset(index_source(), batch_size=100, seed=0, shard_index=0, shard_count=1)
    with pytest.raises(ValueError, match="shard_index=2 is invalid"):
        make_dataset(index_source(), batch_size=2, seed=0, shard_index=2, shard_count=2)
    assert per_process_batch_size(256, 4) == 64
    with pytest.raises(ValueError, match="divisible by the 3 processes"):
        per_process_batch_size(256, 3)
