"""The verifier is its own light package (verifier/: keras-gradcheck, imported as gradcheck): it needs Keras and
NumPy only, never imports the suite, and checks a model on JAX in an environment without TensorFlow."""
import ast
import re
import sys
import textwrap
import zipfile

import pytest
from conftest import REPO_ROOT, run_child, sine_layer_source, wheel_of

VERIFIER = REPO_ROOT / "verifier"
STDLIB = sys.stdlib_module_names


def module_level_imports(path) -> set[str]:
    """The top-level packages a module imports when it is loaded (imports inside functions are lazy)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_verifier_loads_only_keras_numpy_itself_and_the_backend_in_use_and_never_the_suite():
    sources = sorted((VERIFIER / "gradcheck").rglob("*.py"))
    assert len(sources) > 15
    for path in sources:
        own_backend = {path.stem} if path.parent.name == "backends" else set()  # loaded only on that backend
        outside = module_level_imports(path) - STDLIB - {"keras", "numpy", "gradcheck"} - own_backend
        assert not outside, (path.relative_to(REPO_ROOT), outside)
        every_import = {node.module or "" for node in ast.walk(ast.parse(path.read_text()))
                        if isinstance(node, ast.ImportFrom)} | {alias.name for node in ast.walk(ast.parse(
                            path.read_text())) if isinstance(node, ast.Import) for alias in node.names}
        assert not [name for name in every_import if name.startswith("backprop_suite")], path


def requirements(wheel) -> dict[str, list[str]]:
    """Requires-Dist of a wheel: {extra ('' for none): [distribution names]}."""
    archive = zipfile.ZipFile(wheel)
    metadata = archive.read(next(n for n in archive.namelist() if n.endswith("METADATA"))).decode()
    declared = {}
    for line in metadata.splitlines():
        if line.startswith("Requires-Dist:"):
            name = re.split(r"[<>=;\[ ]", line.removeprefix("Requires-Dist: "))[0].lower()
            extra = re.search(r'extra == "([^"]+)"', line)
            declared.setdefault(extra.group(1) if extra else "", []).append(name)
    return declared


def test_the_verifier_wheel_is_gradcheck_alone_and_requires_keras_and_numpy_not_tensorflow(tmp_path):
    wheel = wheel_of(VERIFIER, tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if ".dist-info" not in name.split("/")[0]} == {"gradcheck"}
    assert {"gradcheck/manual/table.py", "gradcheck/check.py", "gradcheck/backends/jax.py"} <= set(names)
    declared = requirements(wheel)
    assert sorted(declared[""]) == ["keras", "numpy"]
    assert declared["jax"] == ["jax", "jaxlib"] and declared["tensorflow"] == ["tensorflow"]


CLEAN_VENV_CHECK = textwrap.dedent('''
    import importlib.util
    import os
    import sys

    os.environ["KERAS_BACKEND"] = "jax"
    import keras
    import numpy as np

    from gradcheck import check_gradients

    assert importlib.util.find_spec("tensorflow") is None, "TensorFlow is installed in the clean venv"
    keras.utils.set_random_seed(0)
    {layer}

    def model(broken):
        inputs = keras.Input((6,))
        hidden = Sine(broken=broken, name="sine")(keras.layers.Dense(5, bias_initializer="random_normal")(inputs))
        return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))

    x = np.random.default_rng(0).normal(size=(4, 6))
    y = np.eye(3)[[0, 1, 2, 0]]
    right, wrong = (check_gradients(model(broken), x, y, progress=False) for broken in (False, True))
    print(keras.backend.backend(), right.passed, wrong.passed, [row["layer"] for row in wrong.failing_layers()])
''')


@pytest.mark.full  # pip fetches Keras and JAX (a minute or two, from its cache or the index)
def test_in_a_clean_venv_with_jax_and_no_tensorflow_the_verifier_passes_a_right_model_and_names_a_wrong_layer(
        tmp_path):
    """pip install keras-gradcheck[jax] from its wheel (the pinned Keras, JAX and NumPy: requirements.txt) into a
    new venv: a small model passes, and the same model with a Sine layer whose gradient says sin where cos belongs
    fails at that layer alone."""
    wheel = wheel_of(VERIFIER, tmp_path)
    venv = tmp_path / "venv"
    run_child([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pins = tmp_path / "pins.txt"
    pins.write_text("\n".join(line for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
                              if line.split("==")[0] in ("keras", "numpy", "jax", "jaxlib")))
    install = run_child([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c",
                         str(pins), f"{wheel}[jax]"], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, f"pip could not install the verifier's wheel with JAX:\n{install.stderr[-2000:]}"
    check = CLEAN_VENV_CHECK.format(layer=sine_layer_source("clean_venv"))
    done = run_child([str(python), "-c", check], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "jax True False ['sine']"


# The verifier's own marks on a user's model (a copy's parameter names; a model cast in place), not Keras's.
OWN_ATTRIBUTES = {"_cast_in_place_to", "_names_of_the_copied_parameters"}


def private_keras_names(path) -> set[str]:
    """keras.src imports, and private attributes read or set on anything but the module's own objects (self, cls)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras.src"):
            found.add(node.module)
        elif isinstance(node, ast.Attribute) and re.match(r"_[a-z]", node.attr) and \
                not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            found.add(node.attr)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "hasattr", "setattr") and \
                isinstance(node.args[1], ast.Constant) and re.match(r"_[a-z]", str(node.args[1].value)) and \
                getattr(node.args[0], "id", None) not in ("self", "cls"):
            found.add(node.args[1].value)
    return found - OWN_ATTRIBUTES


def test_keras_private_apis_are_named_in_one_module_checked_on_the_pinned_keras():
    internals = VERIFIER / "gradcheck" / "keras_internals.py"
    assert {"_flatten_layers", "_nodes_by_depth", "keras.src.backend.common.masking"} <= private_keras_names(internals)
    for path in sorted((VERIFIER / "gradcheck").rglob("*.py")):
        if path != internals:
            assert not private_keras_names(path), (path.relative_to(REPO_ROOT), private_keras_names(path))
    from gradcheck.keras_internals import KERAS_VERSIONS_CHECKED

    pinned = re.search(r"^keras==(\S+)", (REPO_ROOT / "requirements.txt").read_text(), flags=re.M).group(1)
    assert pinned in KERAS_VERSIONS_CHECKED, "a new Keras: check keras_internals.py's uses against it, then add it"


def test_only_the_backend_adapters_name_a_backend():
    """tensorflow, jax and torch are imported and named (as strings) in gradcheck/backends/ alone."""
    names = {"tensorflow", "jax", "torch"}
    adapters = VERIFIER / "gradcheck" / "backends"
    assert {path.stem for path in adapters.glob("*.py")} == names | {"__init__"}
    for path in sorted((VERIFIER / "gradcheck").rglob("*.py")):
        if path.parent == adapters:
            continue
        tree = ast.parse(path.read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names} | {(node.module or "").split(".")[0] for node in ast.walk(tree)
                                                if isinstance(node, ast.ImportFrom) and node.level == 0}
        named = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value in names}
        assert not (imported | named) & names, (path.relative_to(REPO_ROOT), (imported | named) & names)
