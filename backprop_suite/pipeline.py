"""The input pipelines of training: arrays in memory to tf.data batches for Keras `fit` and `evaluate`.

Epoch e's order depends only on (seed, e), so a run resumed at epoch e sees exactly the batches an
uninterrupted run would have seen.
"""
import math

import keras
import tensorflow as tf

EVALUATION_BATCH = 256  # validation and test batches: forward passes only, so as large as is quick
SAMPLES_PER_EXECUTION = 2048  # fit runs about this many samples per call (steps_per_execution), see below


def steps_per_execution(batch_size: int, replicas: int = 1) -> int:
    """Training steps that `fit` runs in one call of its compiled function.

    Each call costs about 1 ms of Python on top of the step (callbacks, logs, the call itself), serial with
    the computation: 13 % of a batch-32 step of the C003-1 CNN on a 2-core machine. Some 2,000 samples per
    call make it negligible, while the progress bar still moves several times a second. One step per call
    where Keras 3.15 allows no more: on its PyTorch backend, and under a strategy of several replicas, where
    its several-step function fails ("You must feed a value for placeholder tensor", keras-team/keras#19246).
    """
    if replicas > 1 or keras.backend.backend() == "torch":
        return 1
    return max(1, SAMPLES_PER_EXECUTION // batch_size)


def in_memory_pipeline(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` prefetching a fixed two batches, with tf.data's autotuning off.

    These pipelines only slice arrays already in memory, so autotuning has nothing to tune, and its thread
    costs time: destroying an autotuned iterator waits for that thread's next wake-up (up to about 0.5 s on
    TF 2.21, in `~RootDataset::Iterator`), and Keras destroys the validation iterator after every epoch,
    which cost a large, random share of a short epoch of the C003-1 CNN (docs/benchmarks.md).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(2).with_options(options)


def _one_epoch(x, y, batch_size: int, seed: int, epoch) -> tf.data.Dataset:
    """The batches of one epoch of the tensors (x, y), shuffled by (seed, epoch) alone; the last may be smaller.

    Gathered in one go, inside the pipeline's one dataset function: making an iterator instantiates each function
    of its pipeline (this one takes ~8 ms here, a second one for a per-batch gather added ~2 ms more), and `fit`
    makes an iterator per epoch.
    """
    samples = x.shape[0]
    order = tf.random.experimental.stateless_shuffle(
        tf.range(samples, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
    x, y = tf.gather(x, order), tf.gather(y, order)
    whole = samples // batch_size * batch_size
    batches = tf.data.Dataset.from_tensor_slices(tuple(
        tf.reshape(t[:whole], (whole // batch_size, batch_size, *t.shape[1:])) for t in (x, y)))
    if whole < samples:
        batches = batches.concatenate(tf.data.Dataset.from_tensors((x[whole:], y[whole:])))
    return batches


def shuffled_batches(x, y, batch_size: int, seed: int, first_epoch: int, epochs: int) -> tf.data.Dataset:
    """The batches of epochs first_epoch..epochs-1, one after the other (for a hand-written training loop)."""
    x, y = tf.constant(x), tf.constant(y)
    return in_memory_pipeline(tf.data.Dataset.range(first_epoch, epochs).flat_map(
        lambda epoch: _one_epoch(x, y, batch_size, seed, epoch)))


class EpochBatches(keras.callbacks.Callback):
    """`fit`'s training batches: each pass over `self.dataset` is one epoch, shuffled by (seed, epoch).

    Pass it to `fit` as x and among the callbacks (training.fit_epochs does): on_epoch_begin sets `self.epoch`,
    which a pass reads when its first batch is asked for (Keras makes the next epoch's iterator before that
    epoch begins, but tf.data starts prefetching at the first request; tests/test_pipeline.py checks the order).
    One pass per epoch is what lets `fit` run several steps per call and still end each epoch exactly: on an
    endless dataset Keras 3 runs a call's steps in full even past the epoch's end
    (keras/src/trainers/epoch_iterator.py), while a pass that runs out stops the call (get_next_as_optional).
    The pass's length is declared, so that the first epoch's progress bar knows it too.
    """

    def __init__(self, x, y, batch_size: int, seed: int):
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.steps = math.ceil(len(x) / batch_size)
        x, y = tf.constant(x), tf.constant(y)
        self.dataset = in_memory_pipeline(tf.data.Dataset.from_tensors(0).flat_map(
            lambda _: _one_epoch(x, y, batch_size, seed, self.epoch.read_value()))
            .apply(tf.data.experimental.assert_cardinality(self.steps)))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(epoch)


def evaluation_batches(x, y) -> tf.data.Dataset:
    """(x, y) in order, in batches of EVALUATION_BATCH, for `fit`'s validation_data and `evaluate`."""
    return in_memory_pipeline(tf.data.Dataset.from_tensor_slices((x, y)).batch(EVALUATION_BATCH))
