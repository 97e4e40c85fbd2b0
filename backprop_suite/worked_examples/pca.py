"""C003-4: the unit direction of maximum variance solves Va = λa (the top eigenvector of the covariance V),
from the Lagrangian aᵀVa − λ(aᵀa − 1).

Two independent routes on real data: `tf.linalg.eigh` of V, and gradient ascent of aᵀVa on the unit
sphere with the gradient from the tape (each step a ← (a + η∇)/‖a + η∇‖). At the ascent's end, the
Lagrangian's stationarity Va = λa is checked with λ = aᵀVa. float64.
"""
import functools

import numpy as np
import tensorflow as tf

from backprop_suite import artifacts
from backprop_suite.datasets import load_dataset, load_iris
from backprop_suite.worked_examples.result import WorkedResult


def top_direction_by_gradient_ascent(V: tf.Tensor, steps: int, step_size: float, seed: int) -> tf.Tensor:
    a = tf.Variable(np.random.default_rng(seed).standard_normal(V.shape[0]))
    a.assign(a / tf.norm(a))
    for _ in range(steps):
        with tf.GradientTape() as tape:
            variance = tf.tensordot(a, tf.linalg.matvec(V, a), 1)  # aᵀVa
        step = a + step_size * tape.gradient(variance, a)  # the gradient is 2Va
        a.assign(step / tf.norm(step))  # back onto the unit sphere: the constraint aᵀa = 1
    return tf.convert_to_tensor(a)


def analyse(X: np.ndarray, steps: int, seed: int) -> dict:
    centred = X - X.mean(axis=0)
    V = tf.constant(centred.T @ centred / (len(X) - 1))
    eigenvalues, eigenvectors = tf.linalg.eigh(V)  # ascending
    top_value, top_vector = float(eigenvalues[-1]), eigenvectors[:, -1]
    # Step size 1/λ_max: each step multiplies a by (I + 2V/λ_max), a power iteration that keeps the order.
    a = top_direction_by_gradient_ascent(V, steps, 1.0 / top_value, seed)
    lam = float(tf.tensordot(a, tf.linalg.matvec(V, a), 1))
    residual = float(tf.norm(tf.linalg.matvec(V, a) - lam * a))
    plane = np.stack([eigenvectors[:, -1].numpy(), eigenvectors[:, -2].numpy()], axis=1)
    projected = centred @ plane
    return {"ascent_in_plane": a.numpy() @ plane, "eigenvector_in_plane": top_vector.numpy() @ plane,
            "abs_cosine": abs(float(tf.tensordot(a, top_vector, 1))), "variance_along_ascent": lam,
            "top_eigenvalue": top_value, "second_eigenvalue": float(eigenvalues[-2]),
            "variance_of_projection": float(np.var(centred @ a.numpy(), ddof=1)),
            "stationarity_residual": residual, "projected": projected}


def pca(mnist_samples: int = 2000, steps: int = 500, seed: int = 0) -> WorkedResult:
    iris_x, iris_y, iris_data = load_iris()
    dataset = load_dataset("mnist-5k")
    digits = dataset.train.x[:mnist_samples].reshape(mnist_samples, -1).astype(np.float64) / 255.0
    results = {"iris": (analyse(iris_x, steps, seed), [iris_data["classes"][k] for k in iris_y]),
               "mnist": (analyse(digits, steps, seed), [f"digit {k}" for k in dataset.train.y[:mnist_samples]])}
    metrics, lines = {}, ["C003-4: top eigenvector of the covariance (tf.linalg.eigh) vs gradient ascent of aᵀVa "
                          f"on the unit sphere ({steps} steps, gradient from the tape), float64"]
    for name, (r, _) in results.items():
        metrics.update({f"{name}_abs_cosine": r["abs_cosine"],
                        f"{name}_variance_rel_diff": abs(r["variance_along_ascent"] - r["top_eigenvalue"])
                        / r["top_eigenvalue"],
                        f"{name}_stationarity_residual": r["stationarity_residual"]})
        lines.append(f"{name}: |cos(ascent, eigenvector)| = {r['abs_cosine']:.15f}, variance along it "
                     f"{r['variance_along_ascent']:.10g} vs top eigenvalue {r['top_eigenvalue']:.10g} "
                     f"(next {r['second_eigenvalue']:.4g}); ‖Va − λa‖ = {r['stationarity_residual']:.1e}")
    return WorkedResult(metrics, "\n".join(lines), {"pca.png": functools.partial(plot_projections, results)},
                        data={**dataset.provenance(), "also": iris_data}, captions={"pca.png": CAPTION})


def plot_projections(results: dict, path) -> None:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 5), dpi=100)
    for ax, (name, (r, labels)) in zip(axes, results.items(), strict=True):
        classes = sorted(set(labels))  # Iris: setosa, versicolor, virginica; digits 0-9
        colors = plt.get_cmap("tab10")
        for k, label in enumerate(classes):
            points = r["projected"][[i for i, each in enumerate(labels) if each == label]]
            ax.scatter(points[:, 0], points[:, 1], s=8, color=colors(k % 10), label=label, alpha=0.7)
        length = 2.5 * np.sqrt(r["top_eigenvalue"])  # the arrows span 2.5 standard deviations
        for vector, style, width, text in ((r["eigenvector_in_plane"], "-", 5, "top eigenvector (eigh)"),
                                           (r["ascent_in_plane"], "--", 1.5, "gradient ascent of aᵀVa (tape)")):
            direction = vector * np.sign(vector[0]) * length  # an eigenvector's sign is arbitrary
            ax.plot([-direction[0], direction[0]], [-direction[1], direction[1]], style, color="black",
                    linewidth=width, alpha=0.45 if width > 2 else 1.0, label=text)
        ax.set(xlabel="projection on the top eigenvector", ylabel="projection on the second",
               title=f"{name}: |cos(ascent, eigenvector)| = {r['abs_cosine']:.15f}")
        ax.legend(fontsize=7, loc="best", ncol=2 if len(classes) > 5 else 1)
    artifacts.save_figure(figure, path)


CAPTION = ("What to look for: the dashed line (gradient ascent of the variance aᵀVa, gradient from the tape) runs "
           "inside the thick one (the top eigenvector from eigh): the two routes of C003-4 find the same direction, "
           "the one along which the data spread most.")
