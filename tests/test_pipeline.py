"""The training input pipeline: every sample once per epoch, in an order fixed by (seed, epoch), however many
steps `fit` runs per call."""
import keras
import numpy as np
import pytest

from backprop_suite import pipeline
from backprop_suite.models import build_model
from backprop_suite.training import fit_epochs

SAMPLES, BATCH = 100, 16  # 7 steps per epoch, the last of 4 samples: no steps_per_execution divides 7


def digits(samples=SAMPLES):
    rng = np.random.default_rng(0)
    x = rng.random((samples, 784)).astype("float32")
    return x, np.eye(10, dtype="float32")[rng.integers(0, 10, samples)]


def pass_over(batches: pipeline.EpochBatches, epoch: int) -> list[np.ndarray]:
    batches.on_epoch_begin(epoch)
    return [x for x, _ in batches.dataset.as_numpy_iterator()]


def row_numbers(x_batches, x) -> list[int]:
    """Which rows of x the batches hold, in order (the rows are distinct random vectors)."""
    first_column = {value: row for row, value in enumerate(x[:, 0])}
    return [first_column[value] for batch in x_batches for value in batch[:, 0]]


def test_each_pass_is_one_epoch_of_every_sample_once_shuffled_by_seed_and_epoch():
    x, y = digits()
    batches = pipeline.EpochBatches(x, y, BATCH, seed=7)
    assert batches.steps == 7 and batches.dataset.cardinality() == 7  # known before the first epoch
    epoch_0, epoch_1, epoch_0_again = (row_numbers(pass_over(batches, e), x) for e in (0, 1, 0))
    assert sorted(epoch_0) == sorted(epoch_1) == list(range(SAMPLES))
    assert epoch_0 != epoch_1 and epoch_0 == epoch_0_again
    assert [len(b) for b in pass_over(batches, 1)] == [16] * 6 + [4]
    # The hand-written loop's pipeline (distribute.fit_multiworker) orders each epoch the same way.
    endless = row_numbers([x for x, _ in pipeline.shuffled_batches(x, y, BATCH, 7, 0, 2).as_numpy_iterator()], x)
    assert endless == epoch_0 + epoch_1


def fit_three_epochs(steps_per_execution: int):
    keras.utils.set_random_seed(0)
    model = build_model("two_layer_net", hidden_size=8)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy",
                  steps_per_execution=steps_per_execution)
    x, y = digits()
    history = keras.callbacks.History()
    fit_epochs(model, pipeline.EpochBatches(x, y, BATCH, seed=7), (x[:20], y[:20]), 0, 3, callbacks=[history])
    return model, history.history["loss"]


@pytest.mark.parametrize("steps_per_execution", [3, 64])
def test_several_steps_per_call_train_exactly_the_epochs_one_step_per_call_trains(steps_per_execution):
    """On an endless dataset Keras would run the last call's steps in full, past the epoch's end: 9 steps
    instead of 7 with 3 per call. One pass per epoch stops each call where the epoch ends."""
    one, one_losses = fit_three_epochs(1)
    several, several_losses = fit_three_epochs(steps_per_execution)
    assert int(several.optimizer.iterations) == int(one.optimizer.iterations) == 3 * 7
    assert several_losses == one_losses
    assert all(np.array_equal(a, b) for a, b in zip(one.get_weights(), several.get_weights(), strict=True))


def test_fit_trains_epoch_e_on_the_order_of_seed_and_e_also_when_resumed():
    """`fit` makes the next epoch's iterator before that epoch begins, and a resumed run starts mid-way: the
    batches it trains on must still be those of the hand-written loop over shuffled_batches, epoch by epoch."""
    x, y = digits()

    def fresh_model():
        keras.utils.set_random_seed(0)
        model = build_model("two_layer_net", hidden_size=8)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy", steps_per_execution=3)
        return model

    by_fit, by_hand = fresh_model(), fresh_model()
    fit_epochs(by_fit, pipeline.EpochBatches(x, y, BATCH, seed=7), (x[:20], y[:20]), 0, 2, callbacks=[])
    fit_epochs(by_fit, pipeline.EpochBatches(x, y, BATCH, seed=7), (x[:20], y[:20]), 2, 3, callbacks=[])  # resumed
    for x_batch, y_batch in pipeline.shuffled_batches(x, y, BATCH, 7, 0, 3):
        by_hand.train_on_batch(x_batch, y_batch)
    for a, b in zip(by_fit.get_weights(), by_hand.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_the_pipelines_do_not_autotune():
    """Autotuning buys nothing on arrays in memory and its thread made destroying an iterator wait up to
    0.5 s, after every epoch's validation (pipeline.in_memory_pipeline; measured in results/bench.json)."""
    x, y = digits()
    for dataset in (pipeline.EpochBatches(x, y, BATCH, 7).dataset, pipeline.evaluation_batches(x, y),
                    pipeline.shuffled_batches(x, y, BATCH, 7, 0, 1)):
        assert dataset.options().autotune.enabled is False


def test_steps_per_execution_is_one_where_keras_allows_no_more():
    assert pipeline.steps_per_execution(32) == 64 and pipeline.steps_per_execution(4096) == 1
    assert pipeline.steps_per_execution(32, replicas=2) == 1


def test_the_progress_bar_never_counts_past_the_epochs_steps(monkeypatch):
    """7 steps at 3 per call end at step 9 by Keras's count; the bar must read 7/7, never 9/7."""
    from keras.src.utils.progbar import Progbar

    shown, update = [], Progbar.update
    monkeypatch.setattr(Progbar, "update", lambda self, current, *args, **kwargs: (
        shown.append((current, self.target)), update(self, current, *args, **kwargs))[1])
    keras.utils.set_random_seed(0)
    model = build_model("two_layer_net", hidden_size=8)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy", steps_per_execution=3)
    x, y = digits()
    fit_epochs(model, pipeline.EpochBatches(x, y, BATCH, seed=7), (x[:20], y[:20]), 0, 1, callbacks=[], verbose=1)
    assert (7, 7) in shown and all(done <= total for done, total in shown), shown
