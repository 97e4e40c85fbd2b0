"""One Keras model, the same float64 weights and batch, on every Keras 3 backend: the loss, the backend's own
reverse-mode gradients and the manual formulas' gradients, compared with TensorFlow's tape.

Keras fixes its backend when it is imported, so each other backend runs in a child process
(`python -m backprop_suite.cross_backend JOB.npz OUT.npz`, KERAS_BACKEND set) that rebuilds each model by name,
loads the weights and the batch from JOB.npz, and writes its numbers to OUT.npz.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from gradcheck.errors import InputError

CHILD_TIMEOUT_S = 600


def build_named(name: str):
    """A registry model, or a zoo model (models/zoo.py) with its loss; both in float32 as their builders make them."""
    from backprop_suite.models import MODEL_BUILDERS, build_model
    from backprop_suite.models.zoo import ZOO

    if name in MODEL_BUILDERS:
        return build_model(name), None
    return ZOO[name].build(), ZOO[name].loss


def gradients_here(name: str, weights: list, x, t, masks: dict | None) -> dict:
    """On this process's backend, in float64: the loss and every gradient by the backend's autodiff, and by the
    manual formulas where every layer has one (else `manual_missing` names what lacks one)."""
    from gradcheck import autodiff
    from gradcheck.dtypes import with_dtype
    from gradcheck.methods import cast_batch, manual_or_reason, tape_gradients

    model, loss = build_named(name)
    model.set_weights(weights)
    model64 = with_dtype(model, "float64")
    x64, t64 = cast_batch(x, t, "float64")
    tape_loss, tape = tape_gradients(model64, x64, t64, masks, loss)
    twin, missing = manual_or_reason(model64, loss, training=False)
    result = {"backend": autodiff.BACKEND, "backend_version": _version(autodiff.BACKEND), "loss": tape_loss,
              "tape": tape, "manual_missing": missing}
    if twin is not None:
        with autodiff.not_recorded():
            result["manual_loss"], result["manual"] = twin.loss_and_gradients(x64, t64, masks)
    return result


def _version(package: str) -> str:
    from importlib import metadata

    return metadata.version(package)


# --- the job file shared by parent and child --------------------------------------------------------------

def _write_npz(path: Path, index: dict, arrays: dict) -> None:
    """A JSON index and named arrays in one .npz: arrays only, so that reading it unpickles nothing."""
    np.savez(path, __index__=np.array(json.dumps(index)), **arrays)


def _read_npz(path: Path, entry) -> dict:
    """{name: entry(name, its index entry, the arrays)} for every name in the index of a file _write_npz wrote."""
    with np.load(path, allow_pickle=False) as data:
        return {name: entry(name, fields, data) for name, fields in json.loads(str(data["__index__"])).items()}


def _pack(path: Path, jobs: dict) -> None:
    """jobs: {model name: (weights, x, t, masks)} into one .npz."""
    arrays, index = {}, {}
    for name, (weights, x, t, masks) in jobs.items():
        xs, ts = (list(v) if isinstance(v, (list, tuple)) else [v] for v in (x, t))
        index[name] = {"weights": len(weights), "x": len(xs), "t": len(ts), "x_is_list": isinstance(x, (list, tuple)),
                       "t_is_list": isinstance(t, (list, tuple)), "masks": sorted(masks or {})}
        for kind, values in (("w", weights), ("x", xs), ("t", ts)):
            arrays.update({f"{name}/{kind}{k}": np.asarray(v) for k, v in enumerate(values)})
        arrays.update({f"{name}/mask/{layer}": np.asarray(m) for layer, m in (masks or {}).items()})
    _write_npz(path, index, arrays)


def _unpack(path: Path) -> dict:
    def job(name, shape, data):
        weights, xs, ts = ([data[f"{name}/{kind}{k}"] for k in range(shape[count])]
                           for kind, count in (("w", "weights"), ("x", "x"), ("t", "t")))
        masks = {layer: data[f"{name}/mask/{layer}"] for layer in shape["masks"]} or None
        return weights, xs if shape["x_is_list"] else xs[0], ts if shape["t_is_list"] else ts[0], masks

    return _read_npz(path, job)


GRADIENT_METHODS = ("tape", "manual")


def _save_results(path: Path, results: dict) -> None:
    arrays, index = {}, {}
    for name, result in results.items():
        index[name] = {key: result[key] for key in ("backend", "backend_version", "loss", "manual_missing",
                                                     "manual_loss") if key in result}
        for method in GRADIENT_METHODS:
            arrays.update({f"{name}/{method}/{tensor}": g for tensor, g in result.get(method, {}).items()})
            index[name][method] = list(result.get(method, {}))
    _write_npz(path, index, arrays)


def _load_results(path: Path) -> dict:
    def result(name, fields, data):
        return {**{key: value for key, value in fields.items() if key not in GRADIENT_METHODS},
                **{method: {t: data[f"{name}/{method}/{t}"] for t in fields[method]}
                   for method in GRADIENT_METHODS if fields[method]}}

    return _read_npz(path, result)


def run_on_backend(backend: str, jobs: dict, timeout: float = CHILD_TIMEOUT_S) -> dict:
    """gradients_here for every job, in a child process on `backend`; a failure names the backend and its error."""
    with tempfile.TemporaryDirectory() as folder:
        job_file, out_file = Path(folder) / "job.npz", Path(folder) / "out.npz"
        _pack(job_file, jobs)
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        try:
            done = subprocess.run([sys.executable, "-m", "backprop_suite.cross_backend", str(job_file), str(out_file)],
                                  env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise InputError(f"the {backend} backend did not finish the cross-backend gradients in {timeout:.0f} s") \
                from None
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
            raise InputError(f"the {backend} backend failed on the cross-backend gradients (exit {done.returncode}):"
                             f"\n{tail}")
        return _load_results(out_file)


def main(argv: list[str]) -> int:
    job_file, out_file = (Path(a) for a in argv)
    results = {name: gradients_here(name, *job) for name, job in _unpack(job_file).items()}
    _save_results(out_file, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
