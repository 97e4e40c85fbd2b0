"""Experiment specs: the committed ones are valid and name real claims; typos are rejected with the file named."""
import pytest

from backprop_suite.claims import load_claims
from backprop_suite.errors import SpecError
from backprop_suite.experiment import EXPERIMENTS_DIR, load_spec
from backprop_suite.models import build_model
from backprop_suite.worked_examples import WORKED_EXAMPLES

COMMITTED_SPECS = sorted(EXPERIMENTS_DIR.glob("*.toml"))

VALID = """\
question = "Does a tiny run learn?"
claims = ["C002-1"]
profile = "quick"
[model]
name = "two_layer_net"
hidden_size = 8
[data]
dataset = "mnist-5k"
[training]
optimizer = "sgd"
learning_rate = 0.1
loss = "categorical_crossentropy"
batch_size = 100
epochs = 2
seed = 0
[[expected]]
dataset = "mnist-5k"
metric = "parameters"
value = 6370
tolerance = 0
source = "795n + 10 for n = 8"
"""


@pytest.mark.parametrize("path", COMMITTED_SPECS, ids=lambda p: p.stem)
def test_committed_spec_parses_and_builds_its_model_or_names_a_worked_example(path):
    spec = load_spec(path)
    assert spec.question.endswith("?")
    if spec.kind == "training":
        build_model(spec.model, **spec.model_options)
    else:
        assert spec.example in WORKED_EXAMPLES


@pytest.mark.parametrize("path", COMMITTED_SPECS, ids=lambda p: p.stem)
def test_committed_spec_names_claims_that_exist_in_claims_md(path):
    known = {claim.id for claim in load_claims()}
    assert set(load_spec(path).claims) <= known


def test_experiment_is_found_by_name():
    assert load_spec("c003_1_mnist_cnn").name == "c003_1_mnist_cnn"


def _spec_file(tmp_path, text):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def test_valid_spec_gives_typed_fields(tmp_path):
    spec = load_spec(_spec_file(tmp_path, VALID))
    assert (spec.model_options, spec.learning_rate, spec.deterministic) == ({"hidden_size": 8}, 0.1, True)
    assert spec.expected[0].describe() == "parameters = 6370 ± 0"


@pytest.mark.parametrize("change, message", [
    (("epochs = 2", "epochs = 2\nepoch = 3"), r"\[training\]: unknown key\(s\) \['epoch'\]"),
    (("hidden_size = 8", "hiden_size = 8"), r"unknown option\(s\) \['hiden_size'\] for two_layer_net"),
    (('profile = "quick"', 'profile = "quick"\nseed = 1'), r"unknown key\(s\) \['seed'\]"),
    (("batch_size = 100", 'batch_size = "100"'), "batch_size must be int, got str"),
    (("seed = 0\n", ""), "missing key 'seed'"),
    (('optimizer = "sgd"', 'optimizer = "sgdd"'), "optimizer = 'sgdd' is not one of sgd, adam, rmsprop"),
    (('dataset = "mnist-5k"\n[training]', 'dataset = "mnist5k"\n[training]'), "dataset = 'mnist5k' is not one of"),
    (("epochs = 2", "epochs = 0"), "epochs must be a positive finite number"),
    (("learning_rate = 0.1", "learning_rate = nan"), "learning_rate must be a positive finite number, got nan"),
    (("learning_rate = 0.1", "learning_rate = inf"), "learning_rate must be a positive finite number, got inf"),
    (("seed = 0", "seed = 4294967296"), r"seed must be in \[0, 2\*\*32\)"),
    (("seed = 0", "seed = -1"), r"seed must be in \[0, 2\*\*32\)"),
    (("value = 6370\ntolerance = 0", "value = 6370\ntolerance = nan"), "tolerance must be a finite number, got nan"),
    (("value = 6370\ntolerance = 0", "at_least = nan"), "at_least must be a finite number, got nan"),
    (("value = 6370\ntolerance = 0", "value = 6370"), "at_least and/or at_most, or value and tolerance"),
    (("[data]", "[data"), "not valid TOML"),
])
def test_bad_spec_gets_an_error_naming_the_file_and_the_problem(tmp_path, change, message):
    path = _spec_file(tmp_path, VALID.replace(*change))
    with pytest.raises(SpecError, match=message) as error:
        load_spec(path)
    assert str(path) in str(error.value)


def test_unknown_experiment_lists_the_known_ones():
    with pytest.raises(SpecError, match="unknown experiment 'c003_1'.*c003_1_mnist_cnn_quick"):
        load_spec("c003_1")
