"""Train an experiment with Keras `fit` and write its results folder."""
import shutil
import sys
import time
from pathlib import Path

import keras
import tensorflow as tf

from backprop_suite import artifacts, distribute, pipeline
from backprop_suite.checkpoint import EpochCheckpoint, ResumeStateError
from backprop_suite.cli import RESULTS_DIR
from backprop_suite.datasets import held_out_validation, load_dataset, to_model_inputs
from backprop_suite.errors import SpecError
from backprop_suite.experiment import ExperimentSpec
from backprop_suite.models import build_model
from backprop_suite.provenance import environment
from backprop_suite.verdict import evaluate_expectations, sealed, spec_header
from gradcheck.dtypes import global_dtype_policy

OPTIMIZERS = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop}


def build_compiled_model(spec: ExperimentSpec) -> keras.Model:
    """The spec's model, compiled. Under precision "mixed_bfloat16" its layers compute in bfloat16 and keep
    float32 weights (Keras's dtype policy, set while the layers are built and restored after)."""
    try:
        with global_dtype_policy(spec.precision):
            model = build_model(spec.model, **spec.model_options)
    except (ValueError, TypeError) as error:
        raise SpecError(f"{spec.path} [model]: {error}") from None
    # jit_compile=False: XLA made the CNN's training slower on CPU (results/bench.json, `fit_jit` vs `fit`).
    model.compile(optimizer=OPTIMIZERS[spec.optimizer](learning_rate=spec.learning_rate),
                  loss=spec.loss, metrics=["accuracy"], jit_compile=False,
                  steps_per_execution=pipeline.steps_per_execution(
                      spec.batch_size, tf.distribute.get_strategy().num_replicas_in_sync))
    return model


class EpochProgress(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, its count kept within the epoch: with several steps per call (pipeline.
    steps_per_execution) a shorter last call still reports the step it would have ended at (128/113)."""

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch if self.target is None else min(batch, self.target - 1), logs)


def fit_epochs(model: keras.Model, batches: pipeline.EpochBatches, validation: tuple, first_epoch: int,
               end_epoch: int, callbacks: list, verbose: int | str = 0) -> None:
    """Train epochs first_epoch..end_epoch-1 with `model.fit` as train.py does: an epoch is a pass over
    `batches`, then `validation` = (x, y) is evaluated; `callbacks` after the batches' own."""
    # steps_per_epoch given: Keras then keeps its iterator from one epoch to the next and remakes it once per
    # epoch, not twice as without; making one costs ~8 ms here (instantiating the pipeline's function).
    model.fit(batches.dataset, epochs=end_epoch, initial_epoch=first_epoch, steps_per_epoch=batches.steps,
              shuffle=False, validation_data=pipeline.evaluation_batches(*validation),  # batches shuffle
              callbacks=[batches, *callbacks, *([EpochProgress()] if verbose else [])], verbose=verbose)


def train_experiment(spec: ExperimentSpec, results_root: Path = RESULTS_DIR, data_path: str | None = None,
                     restart: bool = False, strategy: tf.distribute.Strategy | None = None,
                     save_weights: str | None = None, discard_unresumable: bool = False,
                     tensorboard: str | None = None) -> dict:
    """Train `spec`, resuming an interrupted run of it; write results_root/<name>/ and return metrics.json.

    An interrupted run that cannot be resumed (unreadable, or of another spec) stops with a one-line error
    naming --restart, or, with `discard_unresumable` (the main job), is discarded with a line saying so.
    One process writes an experiment's results at a time (artifacts.sole_writer).

    Under a tf.distribute `strategy` (backprop_suite.distribute) the batch size is the global batch. With
    several workers only the chief (worker 0) writes results; each worker checkpoints its own state.
    save_weights: also write the trained weights there (Keras .weights.h5; "{worker}" becomes the worker index).
    tensorboard: also log to this folder with keras.callbacks.TensorBoard (needs the tensorboard package).
    """
    strategy = strategy or tf.distribute.get_strategy()
    worker = distribute.worker_index(strategy)
    out_dir = Path(results_root) / spec.name
    artifacts.require_writable_folder(out_dir, "--results-dir")
    lock = ".lock" if worker == 0 else f".lock-worker{worker}"
    with artifacts.result_folder(out_dir), artifacts.sole_writer(out_dir, lock):
        return _train(spec, out_dir, worker, strategy, data_path, restart, save_weights, discard_unresumable,
                      tensorboard)


def _train(spec, out_dir, worker, strategy, data_path, restart, save_weights, discard_unresumable,
           tensorboard) -> dict:
    keras.utils.set_random_seed(spec.seed)
    if spec.deterministic:
        tf.config.experimental.enable_op_determinism()
    dataset = load_dataset(spec.dataset, data_path)
    fit_split, val_split = held_out_validation(dataset.train, spec.validation_fraction, dataset.source)
    with strategy.scope():
        model = build_compiled_model(spec)
    input_shape = model.input_shape[1:]
    (x_fit, y_fit), validation, (x_test, y_test) = (
        to_model_inputs(split, input_shape) for split in (fit_split, val_split, dataset.test))

    state_dir = out_dir / (".in_progress" if worker == 0 else f".in_progress-worker{worker}")
    checkpoint = EpochCheckpoint(state_dir, {"spec": spec.resolved(), "data_sha256": dataset.sha256})
    if restart:
        checkpoint.discard()
    multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    # In a cluster every worker resumes from the last epoch they all finished (checkpoint.py).
    try:
        with strategy.scope():  # restoring builds the optimizer's slots: under a strategy, its variables
            first_epoch = checkpoint.restore(model, distribute.agreed_epochs_done(strategy) if multiworker else None)
    except ResumeStateError as error:
        if not discard_unresumable:
            raise
        print(f"[train] {spec.name}: {str(error).split('; rerun')[0]}: discarding it and starting afresh", flush=True)
        checkpoint.discard()
        keras.utils.set_random_seed(spec.seed)  # the fresh run's initial weights, as if never interrupted
        with strategy.scope():
            model = build_compiled_model(spec)
        first_epoch = 0
    if first_epoch:
        print(f"[train] {spec.name}: resuming after epoch {first_epoch}/{spec.epochs} "
              f"from {checkpoint.state_dir}", flush=True)
    print(f"[train] {spec.name}: {spec.model} ({model.count_params():,} parameters) on {dataset.name} "
          f"({len(fit_split)} train / {len(val_split)} validation / {len(dataset.test)} test)"
          f"{distribute.describe(strategy)}", flush=True)
    if first_epoch < spec.epochs:
        if multiworker:
            batches = pipeline.shuffled_batches(x_fit, y_fit, spec.batch_size, spec.seed, first_epoch, spec.epochs)
            distribute.fit_multiworker(strategy, model, batches, len(x_fit), first_epoch, spec.epochs, validation,
                                       checkpoint)
        else:
            batches = pipeline.EpochBatches(x_fit, y_fit, spec.batch_size, spec.seed)
            logging = [keras.callbacks.TensorBoard(tensorboard)] if tensorboard else []
            fit_epochs(model, batches, validation, first_epoch, spec.epochs, callbacks=[checkpoint, *logging],
                       verbose=1 if sys.stdout.isatty() else 2)
    evaluation_start = time.perf_counter()
    if multiworker:  # Keras 3's evaluate fails there too
        test_loss, test_accuracy = distribute.evaluate_locally(model, x_test, y_test, pipeline.EVALUATION_BATCH)
    else:
        test_loss, test_accuracy = model.evaluate(pipeline.evaluation_batches(x_test, y_test), verbose=0)
    measured = {"test_loss": float(test_loss), "test_accuracy": float(test_accuracy),
                "parameters": model.count_params()}
    record = results_record(spec, dataset, len(fit_split), len(val_split), checkpoint.rows, measured)
    record["wall_time_s"] = round(checkpoint.seconds + time.perf_counter() - evaluation_start, 2)
    record["resumed_after_epoch"] = first_epoch or None
    record["strategy"] = {"name": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync}
    # Every file is written before anything is replaced: a full disk or a kill here leaves the old result and a
    # run that resumes after its last epoch; the new result then replaces the old one whole.
    staging = artifacts.begin_staging(out_dir) if worker == 0 else None
    if worker == 0:
        record = write_results(staging, spec, model, checkpoint.rows, record)
    if save_weights:
        with artifacts.atomic_path(Path(save_weights.replace("{worker}", str(worker)))) as tmp:
            model.save_weights(str(tmp))
    if worker == 0:
        artifacts.publish(staging, out_dir)
    checkpoint.discard()
    print(f"[train] {spec.name}: test_accuracy {test_accuracy:.4f}, test_loss {test_loss:.4f}; "
          f"verdict: {record['verdict']}; "
          + (f"results in {out_dir}" if worker == 0 else "worker 0 writes the results"), flush=True)
    return record


def results_record(spec, dataset, n_fit, n_validation, rows, measured) -> dict:
    """metrics.json: what was measured, against which expectation, on what data and machine."""
    checks, verdict = evaluate_expectations(spec, measured, dataset.name)
    return {
        **spec_header(spec), "verdict": verdict, "checks": checks,
        "metrics": {**measured, **{f"final_{k}": rows[-1][k] for k in artifacts.HISTORY_COLUMNS[1:]},
                    "epochs": len(rows)},
        "data": {**dataset.provenance(), "fit_samples": n_fit, "validation_samples": n_validation},
        "seed": spec.seed, "deterministic": spec.deterministic,
        "environment": environment(),
    }


def write_results(out_dir: Path, spec, model, rows, record) -> dict:
    """Every file of a finished run into `out_dir` (a staging folder: artifacts.publish swaps it in); the record
    as written, sealed."""
    artifacts.write_history_csv(out_dir / "history.csv", rows)
    metrics, data = record["metrics"], record["data"]
    on_data = f"{data['name']}, {data['fit_samples']:,} training images"
    artifacts.plot_curves(rows, "accuracy", out_dir / "acc.png", f"{spec.name}: accuracy\n{on_data}",
                          metrics["test_accuracy"])
    artifacts.plot_curves(rows, "loss", out_dir / "loss.png", f"{spec.name}: loss\n{on_data}", metrics["test_loss"])
    drawing = artifacts.draw_model(model, out_dir)
    with artifacts.atomic_path(out_dir / "spec.toml") as tmp:
        shutil.copyfile(spec.path, tmp)
    record = sealed({**record, "model_drawing": drawing})
    artifacts.write_json(out_dir / "metrics.json", record)  # last: its presence marks a finished run
    return record
