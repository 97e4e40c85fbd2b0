"""Resumable training: after every epoch, the model's state and the history so far, kept atomically.

Layout of the state folder (removed when the run finishes):
    epoch-0003.weights.npz  every model and optimizer variable after epoch 3 (and epoch-0002's, the one before)
    state.json              {fingerprint, epochs_done, weights file, history rows, dropout RNG states,
                             seconds, previous: the same for the epoch before}
state.json is replaced only after the weights file it names is complete, and older weights files
are deleted only after that, so a kill at any moment leaves a consistent set. The epoch before is
kept for a cluster: a worker killed while the others save epoch k may hold only epoch k − 1, and all
workers must resume from the same epoch (`restore(agree=...)`).
"""
import json
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from backprop_suite.artifacts import HISTORY_COLUMNS, atomic_path, write_json
from gradcheck.errors import InputError

STATE_KEYS = ("fingerprint", "epochs_done", "weights", "rows", "seconds", "rng_states")


class ResumeStateError(InputError):
    """An interrupted run's state cannot be resumed: unreadable, incomplete, or from another spec or data."""


class EpochCheckpoint(keras.callbacks.Callback):
    def __init__(self, state_dir: Path, fingerprint: dict):
        super().__init__()
        self.state_dir = Path(state_dir)
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back from state.json
        self.rows: list[dict] = []
        self.seconds = 0.0  # training time of the epochs in `rows`, across interruptions
        self._epoch_start = 0.0
        self._last: dict | None = None  # the state this run stands on (restored or last saved): the next "previous"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    def restore(self, model: keras.Model, agree=None) -> int:
        """Load the last finished epoch's state into `model`; the number of epochs already done.

        agree: for a cluster, a function from this worker's epochs done to the number all workers share
        (their minimum); this worker then restores that epoch, which it holds if it is its last or the one
        before, and starts afresh if it is 0.
        """
        self.set_model(model)
        state = self._read_state()
        epochs_done = state["epochs_done"] if state else 0
        if agree is not None:
            agreed = agree(epochs_done)
            if agreed != epochs_done:
                state = self._state_of_epoch(state, agreed)
        self._last = state
        if not state:
            return 0
        model.optimizer.build(model.trainable_variables)  # its slots exist before they are restored
        weights = self.state_dir / state["weights"]
        if not weights.is_file():
            raise ResumeStateError(f"{weights}: the interrupted run's weights are missing; rerun with --restart "
                                   "to discard the interrupted run")
        try:
            with np.load(weights) as saved:
                arrays = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        except Exception as error:  # zipfile and NumPy raise many kinds for a truncated or foreign file
            raise ResumeStateError(f"{weights}: unreadable checkpoint weights ({type(error).__name__}); rerun "
                                   "with --restart to discard the interrupted run") from None
        variables = saved_variables(model)
        if [a.shape for a in arrays] != [tuple(v.shape) for v in variables]:
            raise ResumeStateError(f"{weights}: its {len(arrays)} arrays do not fit this model's {len(variables)} "
                                   "variables; rerun with --restart to discard the interrupted run")
        for variable, array in zip(variables, arrays, strict=True):
            variable.assign(array)
        generators = dropout_seed_generators(model)
        saved_states = state["rng_states"]
        if len(saved_states) != len(generators) or any(
                np.shape(saved) != tuple(g.state.shape) for g, saved in zip(generators, saved_states, strict=True)):
            raise ResumeStateError(f"{self.state_file}: its rng_states do not fit this model's {len(generators)} "
                                   "dropout seed generators; rerun with --restart to discard the interrupted run")
        for generator, saved in zip(generators, state["rng_states"], strict=True):
            generator.state.assign(np.asarray(saved, dtype=generator.state.dtype))
        self.rows, self.seconds = state["rows"], state["seconds"]
        return state["epochs_done"]

    def _read_state(self) -> dict | None:
        if not self.state_file.exists():
            return None
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError) as error:
            raise ResumeStateError(f"{self.state_file}: unreadable resume state ({error}); "
                                   "rerun with --restart to discard it") from None
        if isinstance(state, dict) and state.get("fingerprint") != self.fingerprint:
            raise ResumeStateError(f"{self.state_dir} holds an interrupted run with a different spec or data; "
                                   "rerun with --restart to discard it")
        if not isinstance(state, dict) or not set(STATE_KEYS) <= set(state):
            raise ResumeStateError(f"{self.state_file}: not a resume state (it needs {', '.join(STATE_KEYS)}); "
                                   "rerun with --restart to discard it")
        wrong = _wrongly_typed(state)
        if wrong:
            raise ResumeStateError(f"{self.state_file}: not a resume state ({wrong}); rerun with --restart to "
                                   "discard it")
        return state

    def _state_of_epoch(self, state: dict | None, epochs_done: int) -> dict | None:
        if epochs_done == 0:
            return None
        previous = (state or {}).get("previous")
        if previous and previous["epochs_done"] == epochs_done:
            return {**previous, "rows": state["rows"][:epochs_done]}
        raise InputError(f"{self.state_dir}: the cluster resumes after epoch {epochs_done}, but this worker holds "
                         f"epoch {(state or {}).get('epochs_done', 0)} only; rerun every worker with --restart")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds += time.perf_counter() - self._epoch_start
        self.rows.append({"epoch": epoch + 1, **{key: float(logs[key]) for key in HISTORY_COLUMNS[1:]}})
        weights_name = f"epoch-{epoch + 1:04d}.weights.npz"
        with atomic_path(self.state_dir / weights_name) as tmp, open(tmp, "wb") as stream:
            # NumPy's own format: 3× faster here than Keras's save_weights (.h5) (docs/benchmarks.md)
            np.savez(stream, *(keras.ops.convert_to_numpy(v) for v in saved_variables(self.model)))
        # The epoch before is the one this run stands on, not what state.json says: after a cluster's rollback
        # state.json still names the epoch being redone, which must not become its own "previous".
        last = self._last if self._last and self._last["epochs_done"] == epoch else None
        previous = {key: last[key] for key in ("epochs_done", "weights", "seconds", "rng_states")} if last else None
        self._last = {
            "fingerprint": self.fingerprint, "epochs_done": epoch + 1, "weights": weights_name,
            "rows": self.rows, "seconds": self.seconds,
            "rng_states": [g.state.numpy().tolist() for g in dropout_seed_generators(self.model)],
            "previous": previous,
        }
        write_json(self.state_file, self._last)
        keep = {weights_name, previous["weights"] if previous else None}
        for old in self.state_dir.glob("epoch-*.weights.*"):
            if old.name not in keep:
                old.unlink()

    def discard(self) -> None:
        shutil.rmtree(self.state_dir, ignore_errors=True)


def _wrongly_typed(state: dict) -> str | None:
    """What in a state.json with the right keys has the wrong type or shape (None: nothing), so that a damaged
    state is refused with a line instead of failing mid-restore."""
    def whole(value):
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    for name, step in (("", state), ("previous ", state.get("previous"))):
        if step is None and name:
            continue
        if not isinstance(step, dict):
            return f"{name or 'the state'} is {type(step).__name__}, not an object"
        if not whole(step.get("epochs_done")):
            return f"{name}epochs_done is {step.get('epochs_done')!r}, not a whole number"
        if not isinstance(step.get("weights"), str) or "/" in step["weights"]:
            return f"{name}weights is {step.get('weights')!r}, not a file name"
        if not isinstance(step.get("seconds"), (int, float)) or isinstance(step.get("seconds"), bool):
            return f"{name}seconds is {step.get('seconds')!r}, not a number"
        rng_states = step.get("rng_states")
        if not isinstance(rng_states, list) or not all(
                isinstance(s, list) and all(isinstance(n, int) and not isinstance(n, bool) for n in s)
                for s in rng_states):
            return f"{name}rng_states is {rng_states!r:.60}, not a list of lists of whole numbers"
    rows = state["rows"]
    if not isinstance(rows, list) or len(rows) != state["epochs_done"] or not all(
            isinstance(row, dict) and all(isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool)
                                          for key in HISTORY_COLUMNS) for row in rows):
        return f"rows is not one history row ({', '.join(HISTORY_COLUMNS)}) per epoch done"
    return None


def saved_variables(model: keras.Model) -> list:
    """What a checkpoint holds besides the seed generators: every model variable (trainable or not) and every
    optimizer variable (step count, moments), in a fixed order."""
    return [*model.weights, *model.optimizer.variables]


def dropout_seed_generators(model: keras.Model) -> list:
    """The seed generators of the model's random layers: their state is not in the weights file."""
    return [layer.seed_generator for layer in model.layers if getattr(layer, "seed_generator", None) is not None]
