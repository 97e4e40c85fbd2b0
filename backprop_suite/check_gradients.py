"""The check_gradients command: check a registry model, a saved `.keras` model or a function's model.

Registry models are checked on real digits (or random data) at a generic point and their reports are the
suite's reference results (results/<model>/); any other model writes only where --out says.
"""
import importlib
import inspect
import sys
import traceback
from pathlib import Path

import keras
import numpy as np

from backprop_suite.datasets import load_dataset, read_npz, to_model_inputs
from backprop_suite.models import MODEL_BUILDERS, build_model
from backprop_suite.models.net_222 import NET_222_PARAMETERS
from backprop_suite.provenance import environment
from gradcheck.check import check_gradients, random_batch
from gradcheck.errors import InputError
from gradcheck.gradient_report import GradientReport
from gradcheck.losses import output_activation
from gradcheck.reference import draw_dropout_masks

BIAS_STD = 0.1
CHECK_POINT = f"Keras's initial weights with biases drawn from N(0, {BIAS_STD}²) (off the ReLU kinks)"


def gradient_model(name: str, rng) -> keras.Model:
    """A registry model at Keras's initialisation, but with biases drawn from N(0, BIAS_STD²).

    Keras initialises biases to 0; then every blank 3×3 patch of a digit gives a conv pre-activation
    of exactly 0, on the ReLU kink (C002-4), and finite differences of the biases are meaningless
    there. Random biases put the check at a generic, differentiable point. The 2-2-2 network, whose
    default weights are 0, gets all twelve parameters uniform in [-1, 1].
    """
    if name == "net_222":
        return build_model(name, parameters={p: rng.uniform(-1, 1) for p in NET_222_PARAMETERS})
    model = build_model(name)
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, BIAS_STD, layer.bias.shape))
    return model


def gradient_batch(model: keras.Model, batch_size: int, rng) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """Inputs, targets and dropout masks: real mnist-5k digits for 784-input models, random otherwise;
    and a description of the data (with its provenance when it is a dataset)."""
    input_shape = model.input_shape[1:]
    if int(np.prod(input_shape)) == 784 and output_activation(model) == "softmax":
        dataset = load_dataset("mnist-5k")
        x, t = to_model_inputs(dataset.train, input_shape)
        if batch_size > len(x):
            raise InputError(f"--batch-size {batch_size}: the check draws its batch from {dataset.name}'s {len(x):,} "
                             f"training digits; give at most {len(x)}")
        picked = rng.choice(len(x), batch_size, replace=False)
        x, t = x[picked].astype(np.float64), t[picked].astype(np.float64)
        data = {"description": "mnist-5k training digits", "provenance": dataset.provenance()}
    else:
        x = rng.standard_normal((batch_size, *input_shape))
        t = rng.random((batch_size, model.output_shape[-1]))
        data = {"description": "standard normal inputs, uniform [0, 1) targets", "provenance": None}
    return x, t, draw_dropout_masks(model.layers, batch_size, rng), data


def gradient_check_report(model_name: str, dtype: str, batch_size=8, fd_entries=None, directions=5, seed=0) -> dict:
    """A registry model's check on one batch (dropout with drawn masks), as JSON-ready data."""
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    model = gradient_model(model_name, rng)
    x, t, masks, data = gradient_batch(model, batch_size, rng)
    report = check_gradients(model, x, t, dtype=dtype, dropout_masks=masks or None, fd_entries=fd_entries,
                             directions=directions, seed=seed).data
    # The suite's record of the machine: the verifier's, with the revision of the code that made it.
    report.update(model=model_name, batch={"size": batch_size, **data}, point=CHECK_POINT, environment=environment())
    return report


def resolve_model(spec: str, imports=()) -> keras.Model:
    """A registry name, a PATH.keras saved with model.save, or package.module:function returning a model."""
    for module in imports:  # modules that register a user's custom layers, before loading
        _import(module, "--import")
    if spec in MODEL_BUILDERS:
        return build_model(spec)
    if spec.endswith(".keras"):
        path = Path(spec)
        try:
            return keras.saving.load_model(path)
        except Exception as error:  # Keras raises many kinds for a bad or custom-object file
            raise InputError(f"--model {spec}: Keras cannot load it ({type(error).__name__}: "
                             f"{str(error).splitlines()[0][:300]}); if it uses custom layers, name the module that "
                             "registers them with --import MODULE") from None
    if ":" in spec:
        module_name, function_name = spec.split(":", 1)
        function = getattr(_import(module_name, "--model"), function_name, None)
        if not callable(function):
            raise InputError(f"--model {spec}: {module_name} has no function {function_name!r}")
        required = _required_parameters(function)
        if required:
            raise InputError(f"--model {spec}: {function_name} needs {', '.join(required)}; give a function that "
                             f"builds the model with no arguments (def build(): return {function_name}(...))")
        try:
            model = function()
        except (Exception, SystemExit) as error:  # the user's code: named by its own file and line, not ours
            raise InputError(f"--model {spec}: {function_name}() failed: {users_error(error)}") from None
        if not isinstance(model, keras.Model):
            raise InputError(f"--model {spec}: returned {type(model).__name__}, not a keras.Model")
        return model
    raise InputError(f"--model {spec!r}: not a registry model ({', '.join(MODEL_BUILDERS)}), a PATH.keras file "
                     "or package.module:function")


def _import(module_name: str, option: str):
    sys.path.insert(0, str(Path.cwd()))  # as `python -m` would: the user's own modules, from where they run
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name) and module_name[len(error.name):][:1] in ("", "."):
            raise InputError(f"{option} {module_name}: cannot import it ({error}); run from the folder that holds "
                             "it or add that folder to PYTHONPATH") from None
        raise InputError(f"{option} {module_name}: importing it failed: {users_error(error)}") from None
    except (Exception, SystemExit) as error:  # a syntax error, or its own code raising, at import
        raise InputError(f"{option} {module_name}: importing it failed: {users_error(error)}") from None
    finally:
        sys.path.pop(0)


def _required_parameters(function) -> list[str]:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: let the call say
        return []
    return [p.name for p in parameters if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def users_error(error: BaseException) -> str:
    """An exception raised by the user's code as one line: the type and message, at the user's own file and line
    (the innermost frame outside this suite and the installed packages)."""
    if isinstance(error, SyntaxError):
        return f"{error.filename}:{error.lineno}: SyntaxError: {error.msg}"
    if isinstance(error, SystemExit):
        description = f"it called SystemExit({error.code!r})"
    else:
        message = str(error).strip().splitlines()
        description = f"{type(error).__name__}: {message[0][:300] if message else ''}".rstrip(": ")
    ours = (str(Path(__file__).resolve().parent), str(Path(keras.__file__).resolve().parent.parent),
            str(Path(inspect.getfile(importlib)).resolve().parent.parent))  # the standard library
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if not str(Path(frame.filename).resolve()).startswith(ours) and not frame.filename.startswith("<")]
    return f"{frames[-1].filename}:{frames[-1].lineno}: {description}" if frames else description


def load_npz(path: Path) -> tuple:
    """Arrays x and y (or x0, x1, ... / y0, y1, ... for several inputs or outputs) from an .npz file."""
    data = read_npz(path, "save one with numpy.savez(path, x=inputs, y=targets)")
    found = []
    for name in ("x", "y"):
        numbered = sorted((k for k in data if k.startswith(name) and k[1:].isdigit()), key=lambda k: int(k[1:]))
        if name in data:
            found.append(data[name])
        elif numbered:
            found.append([data[k] for k in numbered])
        else:
            raise InputError(f"--data {path}: no array {name!r} (it has {', '.join(sorted(data)) or 'none'}); "
                             "save it with numpy.savez(path, x=inputs, y=targets)")
    return tuple(found)


def check_model(model_spec: str, dtype: str, out_dir: Path, data: Path | None = None, batch_size=8,
                fd_entries=None, directions=5, seed=0, training=False, loss=None, imports=()) -> GradientReport:
    """Check the model, print the table, write gradcheck.json and gradcheck.png into out_dir."""
    if model_spec in MODEL_BUILDERS and data is None and not training and loss is None:
        report = GradientReport(gradient_check_report(model_spec, dtype, batch_size, fd_entries, directions, seed))
    else:
        model = resolve_model(model_spec, imports)
        x, y = load_npz(data) if data else random_batch(model, batch_size, loss, seed)
        report = check_gradients(model, x, y, loss=loss, dtype=dtype, training=training, fd_entries=fd_entries,
                                 directions=directions, seed=seed)
        report.data["batch"]["description"] = f"from {data}" if data else "random inputs and targets"
    paths = report.save(out_dir)
    print(report)
    print(f"\nwrote {paths[0]} and {paths[1]}")
    return report
