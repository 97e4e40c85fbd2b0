"""Data-parallel training with tf.distribute (the check that it computes the one-device gradient: equivalence.py).

Batch size means the global batch. With R replicas each takes batch/R examples and computes the
gradient of (its examples' summed loss) / (global batch); the all-reduce sums those, which is the
mean over the global batch: the gradient one device computes on the whole batch. So at a fixed
global batch the learning rate does not change with R. Growing the global batch k-fold is another
matter (fewer, less noisy steps per epoch); the common heuristic is then to scale the learning rate
by k and warm it up, which the suite leaves to you.

Strategies: `default` (one device), `mirrored` (every local GPU, else the logical CPU devices set up
by split_cpu), `multiworker` (MultiWorkerMirroredStrategy over the cluster in TF_CONFIG).

This module is in the code checksum that dates stored results: a multi-worker run's results depend on
its training loop.
"""
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from backprop_suite.cli import STRATEGIES
from gradcheck.errors import InputError

COLLECTIVE_TIMEOUT_S = 60  # a collective that waits longer for a peer fails instead of hanging
PROGRESS_S = 10  # a "waiting for worker ..." line this often meanwhile


def has_gpus() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def split_cpu(count: int) -> None:
    """Present the CPU as `count` logical devices (for mirrored training without GPUs); before any TF op."""
    if count < 1:
        raise InputError(f"--cpu-devices must be at least 1, not {count}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as error:
        raise InputError(f"cannot split the CPU into {count} devices after TensorFlow started: {error}") from None


def check_tf_config(text: str | None) -> dict:
    """TF_CONFIG as a dict, or InputError saying what is wrong with it."""
    if not text:
        raise InputError("--strategy multiworker needs TF_CONFIG, e.g. "
                         '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
                         '"index": 0}} (the same cluster on every machine, each with its own index)')
    try:
        config = json.loads(text)
        workers, task = config["cluster"]["worker"], config["task"]
        index = int(task["index"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise InputError(f"TF_CONFIG is not a cluster spec with cluster.worker and task.index: {error}") from None
    if not isinstance(workers, list) or not workers:
        raise InputError(f"TF_CONFIG cluster.worker must be a list of \"host:port\" addresses, one per worker; got "
                         f"{workers!r}")
    for address in workers:
        host, _, port = str(address).rpartition(":")
        if not isinstance(address, str) or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InputError(f"TF_CONFIG cluster.worker: {address!r} is not \"host:port\" with a port in 1-65535")
    if task.get("type") != "worker" or not 0 <= index < len(workers):
        raise InputError(f"TF_CONFIG task {task} is not one of the {len(workers)} workers in cluster.worker")
    return config


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy; for `multiworker`, the cluster of TF_CONFIG (run under supervise_worker, which bounds the
    wait for it)."""
    if name not in STRATEGIES:
        raise InputError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = None if has_gpus() else [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    check_tf_config(os.environ.get("TF_CONFIG"))
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=COLLECTIVE_TIMEOUT_S)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except (tf.errors.OpError, RuntimeError, ValueError) as error:
        raise cluster_error(error, "while the cluster formed") from None


CHILD_ENV = "BACKPROP_SUITE_CLUSTER_PIPE"  # set in the supervised worker: the pipe to say "cluster formed" on


def supervise_worker(argv: list[str], workers: list[str], me: int, timeout: float) -> int:
    """Run this worker's command as a child process and watch it until its cluster has formed: a progress line
    every PROGRESS_S seconds naming the workers not yet listening, the one-line cluster error (exit 2) after
    `timeout` seconds, and Ctrl-C or SIGTERM ending it at once. TensorFlow waits for its peers inside C++
    holding Python's lock, so neither a thread nor a signal handler of the waiting process would ever run."""
    peers = {index: address for index, address in enumerate(workers) if index != me}
    read_end, write_end = os.pipe()
    child = subprocess.Popen([sys.executable, *argv], env={**os.environ, CHILD_ENV: str(write_end)},
                             pass_fds=[write_end], preexec_fn=_die_with_parent)
    os.close(write_end)
    formed = False

    def stop(number, _frame):
        if formed:  # the worker runs Python again: let it handle the signal (Ctrl-C resumes later, as documented)
            child.send_signal(number)
            return
        child.kill()
        child.wait()
        print(f"stopped by {signal.Signals(number).name} while waiting for the cluster; run the same command again "
              "on every worker to resume", file=sys.stderr, flush=True)
        raise SystemExit(128 + number)

    previous = {number: signal.signal(number, stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        start = time.monotonic()
        while not formed and child.poll() is None:
            if select.select([read_end], [], [], PROGRESS_S)[0]:
                formed = True  # "formed", or end of file: the worker ended (its exit code tells)
                continue
            elapsed = time.monotonic() - start
            silent = ", ".join(_not_listening(peers)) or "the other workers (listening, not yet joined)"
            if elapsed >= timeout:
                child.kill()
                child.wait()
                print(f"error: a worker of the cluster failed or cannot be reached (no cluster after {elapsed:.0f} s; "
                      f"waiting for {silent}); start every worker with the same TF_CONFIG, or give them longer "
                      "with --peer-timeout", file=sys.stderr, flush=True)
                return 2
            print(f"[cluster] waiting for {silent}, {elapsed:.0f} s of {timeout:.0f} s…", flush=True)
        return child.wait()
    finally:
        os.close(read_end)
        for number, handler in previous.items():
            signal.signal(number, handler)


def _die_with_parent() -> None:
    """In the supervised worker: the kernel kills it when its supervisor dies (kill -9 of the command a user
    started must stop the worker too). Linux's prctl(PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


def _not_listening(peers: dict[int, str]) -> list[str]:
    silent = []
    for index, address in peers.items():
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError:
            silent.append(f"worker {index} at {address}")
    return silent


def _say_cluster_formed() -> None:
    """Tell the supervising process (supervise_worker) that every worker answered."""
    pipe = os.environ.pop(CHILD_ENV, None)
    if pipe is not None:
        os.write(int(pipe), b"formed")
        os.close(int(pipe))


def cluster_error(error: Exception, when: str = "") -> "ClusterError":
    """A TensorFlow error about the cluster as the one-line ClusterError, naming the cause, not a source line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [""]
    detail = next((line for line in lines if re.search(r"task|worker|peer|heartbeat|address|port", line, re.I)),
                  lines[-1])
    return ClusterError(f"a worker of the cluster failed or cannot be reached{' ' + when if when else ''} "
                        f"({type(error).__name__}: {detail[:300]}); run the same command again on every worker "
                        "to resume after the last finished epoch")


def my_share(size, *arrays):
    """This replica's consecutive slice of each whole-batch array: replica r of R takes rows
    [r·⌈size/R⌉, (r + 1)·⌈size/R⌉) (the last may be shorter, or empty)."""
    context = tf.distribute.get_replica_context()
    share = -(-size // context.num_replicas_in_sync)
    start = context.replica_id_in_sync_group * share
    return [array[start:start + share] for array in arrays]


def distributed_train_step(strategy, model, optimizer):
    """step(x, t) -> (mean loss, correct predictions) of one global batch: each replica differentiates its
    share of the mean categorical cross-entropy, and the Keras optimizer all-reduces (sums) the replicas'
    gradients before applying the one update, the same on every replica and worker."""
    variables = model.trainable_variables
    loss_fn = keras.losses.CategoricalCrossentropy(reduction="sum", dtype=variables[0].dtype)

    def replica_step(x, t):
        x_part, t_part = my_share(tf.shape(x)[0], x, t)
        size = tf.cast(tf.shape(x)[0], variables[0].dtype)
        with tf.GradientTape() as tape:
            y = model(x_part, training=True)
            loss = loss_fn(t_part, y) / size
        optimizer.apply(tape.gradient(loss, variables), variables)
        correct = tf.reduce_sum(tf.cast(tf.argmax(y, -1) == tf.argmax(t_part, -1), variables[0].dtype))
        return loss, correct

    @tf.function
    def step(x, t):
        loss, correct = strategy.run(replica_step, args=(x, t))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None))

    return step


def train_steps(strategy, model, optimizer, global_batches: list[tuple]) -> list[float]:
    """distributed_train_step over the given global batches (x, t); the losses."""
    step = distributed_train_step(strategy, model, optimizer)
    return [float(step(tf.constant(x), tf.constant(t))[0]) for x, t in global_batches]


def worker_index(strategy) -> int:
    """This process's index in the cluster (0, the chief, when there is no cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(resolver.task_id or 0) if resolver is not None and resolver.task_type else 0


def describe(strategy) -> str:
    if strategy.num_replicas_in_sync == 1 and not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return ""
    return (f"; {type(strategy).__name__}, {strategy.num_replicas_in_sync} replicas"
            + (f", this is worker {worker_index(strategy)}" if isinstance(strategy,
                                                                          tf.distribute.MultiWorkerMirroredStrategy)
               else ""))


def evaluate_locally(model, x, y, batch_size: int = 256) -> tuple[float, float]:
    """Mean categorical cross-entropy and accuracy of `model` on (x, y), on this process alone (no collective)."""
    loss_fn = keras.losses.CategoricalCrossentropy(reduction="sum")
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        y_pred = model(x[start:start + batch_size], training=False)
        total_loss += float(loss_fn(y[start:start + batch_size], y_pred))
        correct += int(np.sum(np.argmax(y_pred, -1) == np.argmax(y[start:start + batch_size], -1)))
    return total_loss / len(x), correct / len(x)


class ClusterError(InputError):
    """A worker of the cluster failed or cannot be reached."""


def fit_multiworker(strategy, model, batches: tf.data.Dataset, samples_per_epoch: int, first_epoch: int,
                    epochs: int, validation, checkpoint) -> None:
    """What `fit` does, for MultiWorkerMirroredStrategy, whose Keras 3 `fit` fails (keras-team/keras#20585):
    distributed_train_step over `batches` (the global batches of epochs first_epoch..epochs-1, each epoch
    `samples_per_epoch` examples), each epoch's mean training loss and accuracy and the validation ones,
    one line per epoch, and `checkpoint` (a Keras callback) after each. A lost worker raises ClusterError."""
    step = distributed_train_step(strategy, model, model.optimizer)
    checkpoint.set_model(model)
    iterator = iter(batches)
    try:
        for epoch in range(first_epoch, epochs):
            checkpoint.on_epoch_begin(epoch)
            total_loss, correct, seen, start = 0.0, 0.0, 0, time.perf_counter()
            while seen < samples_per_epoch:
                x, t = next(iterator)
                loss, right = step(x, t)
                size = int(x.shape[0])
                total_loss, correct, seen = total_loss + float(loss) * size, correct + float(right), seen + size
            val_loss, val_accuracy = evaluate_locally(model, *validation)
            logs = {"loss": total_loss / seen, "accuracy": correct / seen, "val_loss": val_loss,
                    "val_accuracy": val_accuracy}
            print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - start:.0f}s - "
                  + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()), flush=True)
            checkpoint.on_epoch_end(epoch, logs)
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.InternalError,
            tf.errors.AbortedError, tf.errors.CancelledError) as error:
        raise cluster_error(error) from None


def agreed_epochs_done(strategy):
    """For EpochCheckpoint.restore: every worker's epochs done, gathered, and their minimum."""
    def agree(local: int) -> int:
        try:
            values = strategy.gather(strategy.run(lambda: tf.constant([local], tf.int64)), axis=0)
        except tf.errors.OpError as error:
            raise cluster_error(error, "while the cluster formed") from None
        _say_cluster_formed()  # every worker answered
        return int(tf.reduce_min(values))

    return agree
