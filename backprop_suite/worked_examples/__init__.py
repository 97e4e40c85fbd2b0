"""The notes' worked examples: each a function `example(**options) -> WorkedResult`, run from a spec.

A worked example measures named numbers (its metrics), prints what a reader would check by hand,
and may draw figures; the spec's [[expected]] entries turn the numbers into a verdict.
"""
import inspect

from backprop_suite.worked_examples.batch_norm_backward import batch_norm_backward
from backprop_suite.worked_examples.chain_network import chain_network
from backprop_suite.worked_examples.cross_backend import cross_backend_agreement
from backprop_suite.worked_examples.cross_backend_training import cross_backend_training
from backprop_suite.worked_examples.gradient_checks import gradient_check, relu_gradient_at_zero
from backprop_suite.worked_examples.gradient_cost import gradient_cost
from backprop_suite.worked_examples.l1_vs_l2 import l1_vs_l2
from backprop_suite.worked_examples.logistic_regression import logistic_regression
from backprop_suite.worked_examples.manual_sgd import manual_sgd_vs_keras_fit
from backprop_suite.worked_examples.net_222_chain_rule import net_222_chain_rule
from backprop_suite.worked_examples.output_deltas import output_deltas
from backprop_suite.worked_examples.pca import pca
from backprop_suite.worked_examples.vanishing_gradients import vanishing_gradients
from backprop_suite.worked_examples.whole_batch_softmax import whole_batch_softmax

WORKED_EXAMPLES = {
    "net_222_chain_rule": net_222_chain_rule,  # C000-1
    "output_deltas": output_deltas,  # C004-1..4
    "gradient_cost": gradient_cost,  # C002-1, C002-2, C001-1, C000-2
    "whole_batch_softmax": whole_batch_softmax,  # C001-3
    "gradient_check": gradient_check,  # C001-2, C002-3, C002-5, C003-1
    "relu_gradient_at_zero": relu_gradient_at_zero,  # C002-4
    "manual_sgd_vs_keras_fit": manual_sgd_vs_keras_fit,  # C001-2, trained
    "chain_network": chain_network,  # C003-5
    "pca": pca,  # C003-4
    "logistic_regression": logistic_regression,  # C003-2
    "l1_vs_l2": l1_vs_l2,  # C003-3
    "vanishing_gradients": vanishing_gradients,  # C003-6
    "batch_norm_backward": batch_norm_backward,  # beyond the notes: the book's ch. 6.3
    "cross_backend_agreement": cross_backend_agreement,  # beyond the notes: every Keras backend's gradients
    "cross_backend_training": cross_backend_training,  # beyond the notes: one spec trained on every backend
}


def example_options(name: str) -> dict:
    return {p.name: p.default for p in inspect.signature(WORKED_EXAMPLES[name]).parameters.values()}
