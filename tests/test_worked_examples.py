"""The notes' worked examples, run from their committed specs through the real runner."""
import json

import matplotlib.image
import pytest

from backprop_suite.errors import SpecError
from backprop_suite.example_runner import run_worked_example
from backprop_suite.experiment import load_spec
from backprop_suite.worked_examples.gradient_cost import gradient_cost
from backprop_suite.worked_examples.manual_sgd import manual_sgd_vs_keras_fit


@pytest.mark.parametrize("experiment, verdict", [
    ("c000_1_net_222_identity", "reproduced"),
    ("c000_1_net_222_sigmoid", "reproduced"),  # the published variant's numbers, to 9 digits
    ("c000_1_net_222_gradcheck", "reproduced"),
    ("c004_output_deltas", "reproduced"),
    ("c002_4_relu_gradient_at_zero", "reproduced"),
    ("c001_3_whole_batch_softmax", "discrepancy explained"),
])
def test_worked_example_spec_gives_its_verdict(tmp_path, experiment, verdict):
    record = run_worked_example(load_spec(experiment), tmp_path)
    assert record["verdict"] == verdict, [c for c in record["checks"] if not c["met"]]
    out = tmp_path / experiment
    assert json.loads((out / "metrics.json").read_text())["verdict"] == verdict
    assert (out / "report.txt").read_text().strip() and (out / "spec.toml").exists()


def test_c000_1_prints_every_chain_rule_factor_of_every_weight(tmp_path):
    record = run_worked_example(load_spec("c000_1_net_222_identity"), tmp_path)
    report = (tmp_path / "c000_1_net_222_identity" / "report.txt").read_text()
    for weight in ("w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8"):
        assert f"∂E/∂{weight} = " in report
    assert "[δ1·w5 + δ2·w7]" in report and record["metrics"]["max_abs_diff_hand_vs_tape"] < 1e-15


def test_c001_3_whole_batch_loss_is_ln9_and_per_row_is_ln3(tmp_path):
    metrics = run_worked_example(load_spec("c001_3_whole_batch_softmax"), tmp_path)["metrics"]
    assert metrics["whole_batch_loss"] == pytest.approx(2.1972245773, abs=1e-3)  # ln 9
    assert metrics["per_row_loss"] == pytest.approx(1.0986122887, abs=1e-3)  # ln 3
    assert all(metrics[f"whole_batch_db2_{i}"] == pytest.approx(-2 / 9, abs=2e-3) for i in range(3))


@pytest.mark.full  # training or many forwards, 4-7 s
def test_numerical_gradient_calls_forward_twice_per_parameter_c002_2():
    result = gradient_cost(hidden_size=2, batch_size=20, repeats=2)
    assert result.metrics["parameters"] == 795 * 2 + 10
    assert result.metrics["forward_calls"] == 2 * (795 * 2 + 10)
    assert result.metrics["numerical_vs_backprop_max_abs_diff"] < 1e-6
    # Timing ratios are reported, not asserted: the machines are shared and noisy.


@pytest.mark.full  # training or many forwards, 4-7 s
def test_manual_sgd_follows_keras_fit_step_for_step():
    metrics = manual_sgd_vs_keras_fit(steps=100, compare_after=100, every=50).metrics
    assert metrics["max_abs_weight_diff_float64"] < 1e-12
    assert metrics["max_abs_weight_diff_float32"] < 1e-6


@pytest.mark.full  # the CNN's full check (10 s)
def test_cnn_gradient_check_writes_its_figure(tmp_path):
    spec = load_spec("c003_1_cnn_gradcheck")
    record = run_worked_example(spec, tmp_path)
    assert record["verdict"] == "reproduced" and record["metrics"]["parameters"] == 600_810
    assert matplotlib.image.imread(tmp_path / spec.name / "gradcheck.png").ndim == 3


def test_expected_metric_that_is_not_measured_is_named(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('question = "?"\nclaims = ["C002-4"]\nprofile = "quick"\nkind = "worked_example"\n'
                    '[example]\nname = "relu_gradient_at_zero"\n'
                    '[[expected]]\nmetric = "relu_gradient"\nvalue = 0\ntolerance = 0\nsource = "x"\n')
    with pytest.raises(SpecError, match=r"expected metric\(s\) \['relu_gradient'\] are not measured"):
        run_worked_example(load_spec(path), tmp_path)


def test_unknown_example_option_is_rejected_with_the_file_named(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('question = "?"\nclaims = ["C004-1"]\nprofile = "quick"\nkind = "worked_example"\n'
                    '[example]\nname = "output_deltas"\nsample = 3\n')
    with pytest.raises(SpecError, match=rf"{path} \[example\]: unknown option\(s\) \['sample'\]"):
        load_spec(path)


def test_c003_5_chain_products_equal_the_tape_and_shrink_with_the_sigmoid(tmp_path):
    record = run_worked_example(load_spec("c003_5_chain_network"), tmp_path)
    assert record["verdict"] == "reproduced" and record["metrics"]["max_rel_error"] < 1e-12
    # Each sigmoid factor f′(u)·w is at most 1.5/4 here, so 28 of them shrink the gradient far below 1e-6.
    assert record["metrics"]["first_over_last_weight_gradient_sigmoid_depth30"] < 1e-6
    report = (tmp_path / "c003_5_chain_network" / "report.txt").read_text()
    assert "∂E/∂w3 = ∂E/∂a4" in report and "f′(u4)" in report
    assert matplotlib.image.imread(tmp_path / "c003_5_chain_network" / "chain_gradients.png").ndim == 3


@pytest.mark.full  # training or many forwards, 4-7 s
def test_c003_4_gradient_ascent_finds_the_top_eigenvector_of_the_covariance(tmp_path):
    # Two independent routes (eigh, and ascent with the tape's gradient) must agree: with fewer steps
    # than convergence needs, the cosine check would fail.
    record = run_worked_example(load_spec("c003_4_pca"), tmp_path)
    assert record["verdict"] == "reproduced", [c for c in record["checks"] if not c["met"]]
    assert matplotlib.image.imread(tmp_path / "c003_4_pca" / "pca.png").ndim == 3


@pytest.mark.full  # training or many forwards, 4-7 s
def test_c003_4_check_fails_when_the_ascent_has_not_converged():
    from backprop_suite.worked_examples.pca import pca

    assert pca(mnist_samples=500, steps=3).metrics["mnist_abs_cosine"] < 1 - 1e-9


@pytest.mark.full  # training or many forwards, 4-7 s
def test_c003_2_logistic_regression_gradient_and_training(tmp_path):
    record = run_worked_example(load_spec("c003_2_logistic_regression"), tmp_path)
    assert record["verdict"] == "reproduced", [c for c in record["checks"] if not c["met"]]
    assert record["metrics"]["mnist_cost_first_over_last"] > 5  # the learning curve falls


@pytest.mark.full  # training runs (10-20 s)
def test_c003_3_l1_leaves_several_times_more_near_zero_weights_than_l2_at_equal_accuracy(tmp_path):
    metrics = run_worked_example(load_spec("c003_3_l1_vs_l2"), tmp_path)["metrics"]
    assert metrics["l1_near_zero_0.001"] >= 5 * metrics["l2_near_zero_0.001"]
    assert abs(metrics["l1_accuracy_0.001"] - metrics["l2_accuracy_0.001"]) <= 0.02
    assert matplotlib.image.imread(tmp_path / "c003_3_l1_vs_l2" / "l1_vs_l2.png").ndim == 3


@pytest.mark.full  # training runs (10-20 s)
def test_c003_6_sigmoid_gradients_vanish_at_depth_20_and_large_relu_weights_explode(tmp_path):
    metrics = run_worked_example(load_spec("c003_6_vanishing_gradients"), tmp_path)["metrics"]
    assert metrics["sigmoid_first_over_last_depth20"] <= 1 / 100
    assert metrics["sigmoid_bound_holds"] and metrics["tanh_bound_holds"] and metrics["relu_bound_holds"]
    assert metrics["relu_large_weights_first_over_last"] >= 100
