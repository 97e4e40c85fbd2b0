"""TwoLayerNet trained with the manual gradients and plain SGD, against Keras `fit` with SGD from the
same initial weights and the same batch order: do the weights agree after `compare_after` steps
(and still after `steps`)?"""
import functools

import keras
import numpy as np

from backprop_suite import artifacts
from backprop_suite.datasets import held_out_validation, load_dataset, to_model_inputs
from backprop_suite.models import build_model
from backprop_suite.worked_examples.result import WorkedResult
from gradcheck.dtypes import with_dtype
from gradcheck.manual.twin import ManualTwin
from gradcheck.parameters import parameters


class PerStepLoss(keras.callbacks.Callback):
    """Each step's own minibatch loss. Keras logs the running mean m_k of the epoch's first k steps,
    so the k-th step's loss is k·m_k − (k − 1)·m_(k−1); validation accuracy every `every` steps."""

    def __init__(self, x_val, y_val, every, snapshot_after):
        super().__init__()
        self.x_val, self.y_val, self.every, self.snapshot_after = x_val, y_val, every, snapshot_after
        self.losses, self.accuracy, self.snapshot, self._previous_mean = [], [], None, 0.0

    def on_train_batch_end(self, batch, logs=None):
        k = batch + 1
        self.losses.append(k * logs["loss"] - (k - 1) * self._previous_mean)
        self._previous_mean = logs["loss"]
        if k % self.every == 0:
            self.accuracy.append(validation_accuracy(self.model, self.x_val, self.y_val))
        if k == self.snapshot_after:
            self.snapshot = [v.numpy() for v in parameters(self.model).values()]


def validation_accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model(x).numpy(), axis=1) == np.argmax(y, axis=1)))


def run_both(dtype, steps, compare_after, batch_size, learning_rate, hidden_size, seed, data, every):
    (x_fit, y_fit), (x_val, y_val) = data
    x_fit, y_fit, x_val, y_val = (a.astype(dtype) for a in (x_fit, y_fit, x_val, y_val))
    rng = np.random.default_rng(seed)
    epochs_needed = -(-steps * batch_size // len(x_fit))
    order = np.concatenate([rng.permutation(len(x_fit)) for _ in range(epochs_needed)])[:steps * batch_size]
    keras.utils.set_random_seed(seed)
    keras_model = with_dtype(build_model("two_layer_net", hidden_size=hidden_size, weight_init_std=0.01), dtype)
    manual_model = with_dtype(keras_model, dtype)  # same initial weights, separate variables

    # A Keras Loss object computes in float32 unless told otherwise, even for a float64 model.
    keras_model.compile(optimizer=keras.optimizers.SGD(learning_rate),
                        loss=keras.losses.CategoricalCrossentropy(dtype=dtype))
    # Keras keeps η in a float32 variable (0.1 becomes 0.10000000149…); use exactly the η it applies.
    learning_rate = float(keras_model.optimizer.learning_rate.numpy())
    per_step = PerStepLoss(x_val, y_val, every, compare_after)
    keras_model.fit(x_fit[order], y_fit[order], batch_size=batch_size, epochs=1, shuffle=False, verbose=0,
                    callbacks=[per_step])

    twin, variables = ManualTwin(manual_model), parameters(manual_model)
    manual_losses, manual_accuracy, snapshot = [], [], None
    for step in range(steps):
        batch = order[step * batch_size:(step + 1) * batch_size]
        loss, grads = twin.loss_and_gradients(x_fit[batch], y_fit[batch])
        for name, variable in variables.items():
            variable.assign(variable.numpy() - learning_rate * grads[name].astype(dtype))  # w ← w − η·∂L/∂w
        manual_losses.append(loss)
        if (step + 1) % every == 0:
            manual_accuracy.append(validation_accuracy(manual_model, x_val, y_val))
        if step + 1 == compare_after:
            snapshot = [v.numpy() for v in variables.values()]
    difference_at_end = max(float(np.abs(a.numpy() - b.numpy()).max())
                            for a, b in zip(parameters(keras_model).values(), variables.values(), strict=True))
    difference = max(float(np.abs(a - b).max()) for a, b in zip(per_step.snapshot, snapshot, strict=True))
    return {"max_abs_weight_diff": difference, "max_abs_weight_diff_at_end": difference_at_end,
            "keras_losses": per_step.losses, "manual_losses": manual_losses,
            "keras_val_accuracy": per_step.accuracy, "manual_val_accuracy": manual_accuracy}


def manual_sgd_vs_keras_fit(steps: int = 1000, compare_after: int = 100, batch_size: int = 100,
                            learning_rate: float = 0.1, hidden_size: int = 50, seed: int = 0,
                            every: int = 20) -> WorkedResult:
    if not 0 < compare_after <= steps:
        raise ValueError(f"compare_after must be between 1 and steps={steps}, got {compare_after}")
    dataset = load_dataset("mnist-5k")
    fit, validation = held_out_validation(dataset.train, 0.1)
    data = (to_model_inputs(fit, (784,)), to_model_inputs(validation, (784,)))
    runs = {dtype: run_both(dtype, steps, compare_after, batch_size, learning_rate, hidden_size, seed, data, every)
            for dtype in ("float32", "float64")}
    metrics = {f"max_abs_weight_diff_{d}": r["max_abs_weight_diff"] for d, r in runs.items()}
    metrics.update({f"max_abs_weight_diff_{d}_after_{steps}_steps": r["max_abs_weight_diff_at_end"]
                    for d, r in runs.items()})
    metrics.update({"final_val_accuracy_manual": runs["float32"]["manual_val_accuracy"][-1],
                    "final_val_accuracy_keras": runs["float32"]["keras_val_accuracy"][-1],
                    "loss_drop_manual": runs["float32"]["manual_losses"][0] - runs["float32"]["manual_losses"][-1]})
    text = "\n".join([
        f"TwoLayerNet 784-{hidden_size}-10 (sigmoid, N(0, 0.01²) init) on mnist-5k, SGD η = {learning_rate}, "
        f"batch {batch_size}, same initial weights and batch order:",
        *[f"  {d}: max |W_keras − W_manual| after {compare_after} steps = {r['max_abs_weight_diff']:.1e}, "
          f"after {steps} steps = {r['max_abs_weight_diff_at_end']:.1e}" for d, r in runs.items()],
        f"  validation accuracy after {steps} steps: manual {metrics['final_val_accuracy_manual']:.4f}, "
        f"Keras fit {metrics['final_val_accuracy_keras']:.4f}"])
    figures = {"loss.png": functools.partial(plot_runs, runs["float32"], "losses", "minibatch loss", 1),
               "acc.png": functools.partial(plot_runs, runs["float32"], "val_accuracy", "validation accuracy", every)}
    same = ("What to look for: the manual-backprop SGD curve and Keras fit's lie on top of each other — same "
            "weights, same batches, gradients equal up to rounding (C001-2, C002-5).")
    return WorkedResult(metrics, text, figures, data=dataset.provenance(), captions=dict.fromkeys(figures, same),
                        details={d: {k: v for k, v in r.items()} for d, r in runs.items()})


def plot_runs(run: dict, key: str, label: str, every: int, path) -> None:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    for source, style in (("keras", "-"), ("manual", "--")):
        values = run[f"{source}_{key}"]
        axes.plot(np.arange(1, len(values) + 1) * every, values, style,
                  label=f"{'Keras fit' if source == 'keras' else 'manual backprop'} (float32)")
    axes.set(xlabel="SGD step", ylabel=label, title=f"TwoLayerNet: manual gradients vs Keras fit: {label}")
    axes.grid(alpha=0.3)
    axes.legend()
    artifacts.save_figure(figure, path)
