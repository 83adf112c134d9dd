"""The bucketed batch iterator: contents, bucketing, determinism, process slices, exact resumption."""

import itertools
import json

import numpy as np
import pytest

from xlmr_jax.finetune.batches import BatchIterator

PAD_ID = 1
IGNORE = -100
WIDTH = 16


def make_features(num_rows=37, seed=0, width=WIDTH):
    """Token-classification-like features: ids and labels padded on the last axis, one label per row."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, width + 1, num_rows)
    real = np.arange(width)[None, :] < lengths[:, None]
    arrays = {
        "input_ids": np.where(real, rng.integers(5, 1000, (num_rows, width)), PAD_ID).astype(np.int32),
        "attention_mask": real.astype(np.int8),
        "labels": np.where(real, rng.integers(0, 9, (num_rows, width)), IGNORE).astype(np.int32),
        "example_id": np.arange(num_rows, dtype=np.int64) + 1000,
    }
    return arrays, lengths


def make_iterator(arrays=None, lengths=None, **overrides):
    if arrays is None:
        arrays, lengths = make_features()
    options = dict(sequence_keys=["input_ids", "attention_mask", "labels"],
                   pad_values={"input_ids": PAD_ID, "attention_mask": 0, "labels": IGNORE},
                   global_batch_size=4, buckets=[4, 8, 16], shuffle=True, seed=3, num_epochs=2)
    options.update(overrides)
    return BatchIterator(arrays, lengths, **options)


def assert_batches_equal(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def epochs_of(batches, per_epoch):
    return [batches[i:i + per_epoch] for i in range(0, len(batches), per_epoch)]


# -- contents and bucketing ----------------------------------------------------------------------

@pytest.mark.parametrize("buckets", [[4, 8, 16], [16], None, [2, 5, 11, 16]])
def test_evaluation_epoch_covers_every_row_once_with_its_own_data(buckets):
    arrays, lengths = make_features()
    iterator = make_iterator(arrays, lengths, buckets=buckets, drop_remainder=False, num_epochs=1)
    batches = list(iterator)
    assert len(batches) == iterator.batches_per_epoch
    seen = []
    for batch in batches:
        valid, rows = batch["__valid__"], batch["__index__"]
        assert valid.dtype == np.bool_ and rows.dtype == np.int64 and len(valid) == 4
        assert valid[0] and (np.all(valid[:valid.sum()]) and not np.any(valid[valid.sum():]))
        real = rows[valid]
        width = batch["input_ids"].shape[1]
        # the batch's width is the smallest bucket holding its longest row, and one bucket only
        bucket_list = buckets or [WIDTH]
        expected_width = min(b for b in bucket_list if b >= lengths[real].max())
        assert width == expected_width
        assert all(min(b for b in bucket_list if b >= length) == width for length in lengths[real])
        for key in ("input_ids", "attention_mask", "labels"):
            assert batch[key].shape == (4, width) and batch[key].dtype == arrays[key].dtype
            np.testing.assert_array_equal(batch[key][valid], arrays[key][real, :width])
        # cutting to the bucket dropped only padding
        assert np.all(arrays["attention_mask"][real, width:] == 0)
        np.testing.assert_array_equal(batch["example_id"][valid], arrays["example_id"][real])
        seen.extend(real.tolist())
    assert sorted(seen) == list(range(len(lengths)))


def test_padding_rows_are_all_pad():
    arrays, lengths = make_features(num_rows=6)
    iterator = make_iterator(arrays, lengths, buckets=None, global_batch_size=4, drop_remainder=False,
                             shuffle=False, num_epochs=1, pad_values={"input_ids": PAD_ID, "attention_mask": 0,
                                                                      "labels": IGNORE, "example_id": -1})
    first, last = list(iterator)
    assert first["__valid__"].all()
    np.testing.assert_array_equal(last["__valid__"], [True, True, False, False])
    np.testing.assert_array_equal(last["__index__"], [4, 5, -1, -1])
    assert np.all(last["input_ids"][2:] == PAD_ID) and np.all(last["attention_mask"][2:] == 0)
    assert np.all(last["labels"][2:] == IGNORE)
    np.testing.assert_array_equal(last["example_id"], [1004, 1005, -1, -1])
    # a non-sequence array without a pad value is filled with 0
    iterator = make_iterator(arrays, lengths, buckets=None, drop_remainder=False, shuffle=False, num_epochs=1)
    np.testing.assert_array_equal(list(iterator)[-1]["example_id"], [1004, 1005, 0, 0])


def test_unshuffled_order_is_bucket_by_bucket_in_row_order():
    arrays, lengths = make_features()
    batches = list(make_iterator(arrays, lengths, shuffle=False, drop_remainder=False, num_epochs=1))
    order = np.concatenate([batch["__index__"][batch["__valid__"]] for batch in batches])
    bucket = np.searchsorted([4, 8, 16], lengths)
    np.testing.assert_array_equal(order, np.lexsort((np.arange(len(lengths)), bucket)))


def test_training_drops_incomplete_batches_and_reshuffles_each_epoch():
    arrays, lengths = make_features()
    iterator = make_iterator(arrays, lengths, num_epochs=3)
    counts = np.bincount(np.searchsorted([4, 8, 16], lengths), minlength=3)
    assert iterator.batches_per_epoch == sum(counts // 4)
    batches = list(iterator)
    assert len(batches) == 3 * iterator.batches_per_epoch
    epochs = epochs_of(batches, iterator.batches_per_epoch)
    for epoch in epochs:
        rows = np.concatenate([batch["__index__"] for batch in epoch])
        assert all(batch["__valid__"].all() for batch in epoch)
        assert len(set(rows.tolist())) == len(rows)  # no row twice in an epoch
    orders = [tuple(np.concatenate([b["__index__"] for b in epoch]).tolist()) for epoch in epochs]
    assert len(set(orders)) == 3  # each epoch shuffled anew
    widths = [batch["input_ids"].shape[1] for batch in epochs[0]]
    assert widths != sorted(widths)  # batch order shuffled across buckets, not bucket by bucket


def test_deterministic_for_a_seed_and_different_across_seeds():
    first = list(make_iterator(seed=7))
    assert_batches_equal(first, list(make_iterator(seed=7)))
    other = list(make_iterator(seed=8))
    assert any(not np.array_equal(a["__index__"], b["__index__"]) for a, b in zip(first, other, strict=True))


def test_forever_repeats_the_same_epochs_as_a_finite_run():
    iterator = make_iterator(num_epochs=None)
    two_epochs = list(make_iterator(num_epochs=2))
    assert_batches_equal(list(itertools.islice(iterator, len(two_epochs))), two_epochs)
    more = list(itertools.islice(iterator, 5 * iterator.batches_per_epoch))
    assert len(more) == 5 * iterator.batches_per_epoch


def test_bucket_wider_than_the_arrays_pads_to_the_bucket():
    arrays, lengths = make_features(width=10)
    batches = list(make_iterator(arrays, lengths, buckets=[4, 12], drop_remainder=False, num_epochs=1))
    wide = [batch for batch in batches if batch["input_ids"].shape[1] == 12]
    assert wide
    for batch in wide:
        valid = batch["__valid__"]
        np.testing.assert_array_equal(batch["input_ids"][valid, :10], arrays["input_ids"][batch["__index__"][valid]])
        assert np.all(batch["input_ids"][:, 10:] == PAD_ID) and np.all(batch["labels"][:, 10:] == IGNORE)


def test_sequence_arrays_with_more_axes_are_cut_on_the_last():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 9, 12)
    choices = np.where(np.arange(8)[None, None, :] < lengths[:, None, None], rng.integers(5, 50, (12, 3, 8)),
                       PAD_ID)  # multiple choice: (rows, choices, sequence)
    iterator = BatchIterator({"input_ids": choices, "label": rng.integers(0, 3, 12)}, lengths,
                             sequence_keys=["input_ids"], pad_values={"input_ids": PAD_ID}, global_batch_size=3,
                             buckets=[4, 8], shuffle=True, seed=0, num_epochs=1, drop_remainder=False)
    for batch in iterator:
        width = batch["input_ids"].shape[-1]
        valid = batch["__valid__"]
        assert batch["input_ids"].shape == (3, 3, width)
        np.testing.assert_array_equal(batch["input_ids"][valid], choices[batch["__index__"][valid], :, :width])


# -- processes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("drop_remainder", [True, False])
def test_processes_split_each_global_batch_in_contiguous_slices(drop_remainder):
    arrays, lengths = make_features()
    make = dict(global_batch_size=8, drop_remainder=drop_remainder, buckets=[8, 16])
    global_batches = list(make_iterator(arrays, lengths, **make))
    per_process = [list(make_iterator(arrays, lengths, process_index=p, process_count=4, **make))
                   for p in range(4)]
    assert all(len(batches) == len(global_batches) for batches in per_process)
    for step, global_batch in enumerate(global_batches):
        for key, value in global_batch.items():
            slices = [per_process[p][step][key] for p in range(4)]
            assert all(s.shape[0] == 2 for s in slices)
            np.testing.assert_array_equal(np.concatenate(slices), value, err_msg=key)


def test_process_count_must_divide_the_global_batch():
    with pytest.raises(ValueError, match="global_batch_size 6 must be divisible by process_count 4"):
        make_iterator(global_batch_size=6, process_count=4)
    with pytest.raises(ValueError, match=r"process_index must be in \[0, 2\)"):
        make_iterator(process_index=2, process_count=2)


# -- resumption ----------------------------------------------------------------------------------

@pytest.mark.parametrize("drop_remainder", [True, False])
def test_resume_exactly_at_every_point_including_epoch_boundaries(drop_remainder):
    uninterrupted = list(make_iterator(drop_remainder=drop_remainder, num_epochs=3))
    per_epoch = make_iterator(drop_remainder=drop_remainder).batches_per_epoch
    assert len(uninterrupted) == 3 * per_epoch
    for k in sorted({0, 1, per_epoch - 1, per_epoch, per_epoch + 1, 2 * per_epoch, 3 * per_epoch - 1}):
        iterator = make_iterator(drop_remainder=drop_remainder, num_epochs=3)
        assert_batches_equal(list(itertools.islice(iterator, k)), uninterrupted[:k])
        state = json.loads(json.dumps(iterator.get_state()))  # as stored in a checkpoint
        resumed = make_iterator(drop_remainder=drop_remainder, num_epochs=3)
        resumed.set_state(state)
        assert_batches_equal(list(resumed), uninterrupted[k:])


def test_resume_with_another_process_count():
    arrays, lengths = make_features()
    uninterrupted = list(make_iterator(arrays, lengths))
    single = make_iterator(arrays, lengths)
    list(itertools.islice(single, 5))
    state = json.loads(json.dumps(single.get_state()))
    halves = []
    for p in range(2):
        resumed = make_iterator(arrays, lengths, process_index=p, process_count=2)
        resumed.set_state(state)
        halves.append(list(resumed))
    for step, global_batch in enumerate(uninterrupted[5:]):
        np.testing.assert_array_equal(np.concatenate([halves[0][step]["__index__"], halves[1][step]["__index__"]]),
                                      global_batch["__index__"])


def test_resume_refuses_a_different_order():
    iterator = make_iterator()
    next(iterator)
    state = iterator.get_state()
    with pytest.raises(ValueError, match="seed: saved 3, now 4"):
        make_iterator(seed=4).set_state(state)
    with pytest.raises(ValueError, match="global_batch_size"):
        make_iterator(global_batch_size=8).set_state(state)
    arrays, lengths = make_features(seed=1)
    with pytest.raises(ValueError, match="lengths_crc32"):
        make_iterator(arrays, lengths).set_state(state)
    with pytest.raises(ValueError, match="not a BatchIterator state"):
        make_iterator().set_state({"next_index": 1})


# -- errors at the boundary ----------------------------------------------------------------------

def test_clear_errors_for_bad_input():
    arrays, lengths = make_features()
    with pytest.raises(ValueError, match="arrays is empty"):
        make_iterator({}, lengths)
    with pytest.raises(ValueError, match="no rows"):
        make_iterator({key: value[:0] for key, value in arrays.items()}, lengths[:0])
    with pytest.raises(ValueError, match="share their leading"):
        make_iterator({**arrays, "example_id": arrays["example_id"][:-1]}, lengths)
    with pytest.raises(ValueError, match=r"largest bucket 8 is smaller than row \d+'s length 16"):
        make_iterator(buckets=[4, 8])
    with pytest.raises(ValueError, match="no batch at all"):
        make_iterator(global_batch_size=64)
    with pytest.raises(ValueError, match="pad_values has no value for sequence array 'labels'"):
        make_iterator(pad_values={"input_ids": PAD_ID, "attention_mask": 0})
    with pytest.raises(ValueError, match="lengths must be in"):
        make_iterator(arrays, lengths + 1)
    with pytest.raises(ValueError, match="lengths must be 37 integers"):
        make_iterator(arrays, lengths[:-1])
    with pytest.raises(ValueError, match="one padded width"):
        make_iterator({**arrays, "labels": arrays["labels"][:, :8]}, lengths)
    with pytest.raises(ValueError, match="'__valid__'"):
        make_iterator({**arrays, "__valid__": np.ones(37, bool)}, lengths)
    with pytest.raises(ValueError, match="not in arrays"):
        make_iterator(sequence_keys=["input_ids", "token_type_ids"])
    # the same batch size is fine for evaluation: one padded batch per bucket
    assert make_iterator(global_batch_size=64, drop_remainder=False).batches_per_epoch == 3
