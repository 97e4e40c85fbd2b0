"""C003-2: logistic regression. φ(z) = 1/(1 + e^−z), z = wᵀx + b,
J(w) = Σ −y log φ(z) − (1 − y) log(1 − φ(z)), and its gradient −Σ (y − φ(z))·x.

The hand gradient is checked against the tape on J (float64), then used for plain gradient descent
on two real binary tasks. It is C004-2's output delta δ = φ(z) − y, times the input.
"""
import functools

import numpy as np
import tensorflow as tf

from backprop_suite import artifacts
from backprop_suite.datasets import load_dataset, load_iris
from backprop_suite.worked_examples.result import WorkedResult


def phi(z):
    return 1 / (1 + np.exp(-z))


def cost(w, b, X, y) -> float:
    """J(w) = Σ −y log φ(z) − (1 − y) log(1 − φ(z)), computed as Σ softplus(z) − y·z (no log 0)."""
    z = X @ w + b
    return float(np.sum(np.logaddexp(0, z) - y * z))


def hand_gradient(w, b, X, y):
    """∂J/∂w = −Σ (y − φ(z))·x and ∂J/∂b = −Σ (y − φ(z))  (C003-2; δ = φ(z) − y is C004-2)."""
    error = y - phi(X @ w + b)
    return -X.T @ error, -np.sum(error)


def tape_gradient(w, b, X, y):
    w, b = tf.Variable(w, dtype=tf.float64), tf.Variable(b, dtype=tf.float64)
    with tf.GradientTape() as tape:
        z = tf.linalg.matvec(tf.constant(X), w) + b
        J = tf.reduce_sum(-y * tf.math.log(tf.sigmoid(z)) - (1 - y) * tf.math.log(1 - tf.sigmoid(z)))
    dw, db = tape.gradient(J, [w, b])
    return dw.numpy(), float(db)


def gradient_descent(X, y, learning_rate, epochs):
    """w ← w − η·∂J/∂w with the hand gradient; J after every epoch."""
    w, b, costs = np.zeros(X.shape[1]), 0.0, []
    for _ in range(epochs):
        dw, db = hand_gradient(w, b, X, y)
        w, b = w - learning_rate * dw, b - learning_rate * db
        costs.append(cost(w, b, X, y))
    return w, b, costs


def max_rel_error_at_random_points(X, y, rng, points=5) -> float:
    worst = 0.0
    for _ in range(points):
        w, b = rng.normal(0, 0.5, X.shape[1]), float(rng.normal())
        hand, tape = np.append(*hand_gradient(w, b, X, y)), np.append(*tape_gradient(w, b, X, y))
        worst = max(worst, float(np.max(np.abs(hand - tape) / np.maximum(np.abs(tape), 1e-300))))
    return worst


def logistic_regression(iris_epochs: int = 50, mnist_epochs: int = 50, learning_rate: float = 0.01,
                        seed: int = 0) -> WorkedResult:
    rng = np.random.default_rng(seed)
    iris_x, iris_y, iris_data = load_iris()
    # Setosa (0) vs versicolor (1), on sepal length and petal length, standardised (as the book does).
    keep = iris_y < 2
    X_iris = iris_x[keep][:, [0, 2]]
    X_iris = (X_iris - X_iris.mean(axis=0)) / X_iris.std(axis=0)
    y_iris = iris_y[keep].astype(np.float64)

    dataset = load_dataset("mnist-5k")

    def zeros_and_ones(split):
        keep = split.y < 2
        return split.x[keep].reshape(keep.sum(), -1) / 255.0, split.y[keep].astype(np.float64)

    (X_train, y_train), (X_test, y_test) = zeros_and_ones(dataset.train), zeros_and_ones(dataset.test)
    w_iris, b_iris, iris_costs = gradient_descent(X_iris, y_iris, learning_rate, iris_epochs)
    w_mnist, b_mnist, mnist_costs = gradient_descent(X_train, y_train, learning_rate, mnist_epochs)

    def accuracy(w, b, X, y):
        return float(np.mean((phi(X @ w + b) >= 0.5) == (y == 1)))

    metrics = {"iris_gradient_max_rel_error": max_rel_error_at_random_points(X_iris, y_iris, rng),
               "mnist_gradient_max_rel_error": max_rel_error_at_random_points(X_train, y_train, rng),
               "iris_train_accuracy": accuracy(w_iris, b_iris, X_iris, y_iris),
               "mnist_0_vs_1_test_accuracy": accuracy(w_mnist, b_mnist, X_test, y_test),
               "iris_cost_first_over_last": iris_costs[0] / iris_costs[-1],
               "mnist_cost_first_over_last": mnist_costs[0] / mnist_costs[-1]}
    text = "\n".join([
        "C003-2: logistic regression, gradient −Σ(y − φ(z))·x by hand vs tf.GradientTape on J(w) (float64)",
        f"iris setosa vs versicolor (100 × 2): max relative error {metrics['iris_gradient_max_rel_error']:.1e}; "
        f"after {iris_epochs} epochs of gradient descent, J {iris_costs[0]:.3f} → {iris_costs[-1]:.3f}, "
        f"training accuracy {metrics['iris_train_accuracy']:.3f}",
        f"mnist-5k 0 vs 1 ({len(y_train)} × 784): max relative error {metrics['mnist_gradient_max_rel_error']:.1e}; "
        f"after {mnist_epochs} epochs, J {mnist_costs[0]:.2f} → {mnist_costs[-1]:.2f}, "
        f"test accuracy {metrics['mnist_0_vs_1_test_accuracy']:.4f} ({len(y_test)} test digits)",
        "the gradient is C004-2's output delta δ = φ(z) − y times the input x."])
    figure = functools.partial(plot, X_iris, y_iris, w_iris, b_iris, iris_costs, mnist_costs)
    return WorkedResult(metrics, text, {"logistic_regression.png": figure},
                        data={**dataset.provenance(), "also": iris_data},
                        captions={"logistic_regression.png": CAPTION})


CAPTION = ("What to look for: gradient descent with the hand-derived gradient −Σ (y − φ(z))·x draws a straight "
           "boundary between setosa and versicolor, and the cost J(w) falls at every epoch on both data sets "
           "(C003-2).")


def plot(X, y, w, b, iris_costs, mnist_costs, path) -> None:
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=100)
    for label, marker, name in ((0, "o", "setosa"), (1, "x", "versicolor")):
        left.scatter(*X[y == label].T, marker=marker, label=name)
    xs = np.linspace(X[:, 0].min() - 0.5, X[:, 0].max() + 0.5, 50)
    left.plot(xs, -(w[0] * xs + b) / w[1], "k--", label="decision boundary φ(z) = 0.5")
    left.set(xlabel="sepal length (standardised)", ylabel="petal length (standardised)",
             title="Iris: logistic regression by hand", ylim=(X[:, 1].min() - 0.5, X[:, 1].max() + 0.5))
    left.legend()
    right.plot(range(1, len(iris_costs) + 1), iris_costs, label="iris setosa vs versicolor")
    right.plot(range(1, len(mnist_costs) + 1), mnist_costs, label="mnist-5k 0 vs 1")
    right.set(yscale="log", xlabel="epoch (full-batch gradient descent)", ylabel="J(w) (log scale)",
              title="Learning curves")
    right.legend()
    artifacts.save_figure(figure, path)
