"""Does data-parallel backprop compute the one-device gradient? The all-reduced gradient of a global batch
against one device's, per tensor, and the weights after a few SGD steps against Keras `fit` on one device."""
import keras
import numpy as np
import tensorflow as tf

from backprop_suite.check_gradients import gradient_batch, gradient_model
from backprop_suite.distribute import my_share, train_steps
from gradcheck.dtypes import with_dtype
from gradcheck.methods import tape_gradients
from gradcheck.parameters import parameters
from gradcheck.reference import reference_loss


def all_reduced_gradients(strategy, model, x, t, dropout_masks=None) -> list[np.ndarray]:
    """The gradient of the global batch's mean loss, computed by the replicas and summed by the all-reduce.

    Each replica takes its share of the batch (and of the dropout masks, so it applies its own examples'
    masks) and differentiates its share of the mean: the sum of its examples' losses / the global batch.
    """
    names = sorted(dropout_masks or {})
    variables, size = list(parameters(model).values()), len(x)
    batch = [tf.constant(a) for a in (x, t, *(dropout_masks[n] for n in names))]

    def replica_gradients(*whole):
        x_part, t_part, *mask_parts = my_share(size, *whole)
        with tf.GradientTape() as tape:
            local_mean = reference_loss(model, x_part, t_part, dict(zip(names, mask_parts, strict=True)) or None)
            loss = local_mean * tf.cast(tf.shape(x_part)[0], local_mean.dtype) / size  # its share of the mean
        return tape.gradient(loss, variables)

    @tf.function
    def gradients():
        per_replica = strategy.run(replica_gradients, args=batch)
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in per_replica]

    return [g.numpy() for g in gradients()]


def without_dropout(model: keras.Sequential) -> keras.Sequential:
    """A copy with every Dropout rate set to 0 (the identity), with the same weights and dtype."""
    config = model.get_config()
    for layer_config in config["layers"]:
        if layer_config["class_name"] == "Dropout":
            layer_config["config"]["rate"] = 0.0
    copy = keras.Sequential.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


# float64; the replicas compute the same products and only the batch sum is split and re-added, so the
# gradients differ by rounding of that sum: a few ulps of the largest term, far below 1e-12 relative.
GRADIENT_RTOL = 1e-12
# After N steps those differences pass through N updates; they stay at the rounding level.
WEIGHT_RTOL = 1e-10


def _relative_difference(a, b) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), np.finfo(np.float64).tiny))


def equivalence_report(strategy, model_name: str, batch_size: int, steps: int, learning_rate: float = 0.1,
                       seed: int = 0) -> dict:
    """Data-parallel vs one device, float64, on real digits: the all-reduced gradient of one global batch
    (with the same dropout masks) per tensor, and the weights after `steps` SGD steps without dropout,
    against Keras `fit` on one device."""
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    model32 = gradient_model(model_name, rng)
    x, t, masks, data = gradient_batch(model32, batch_size * (steps + 1), rng)
    x_grad, t_grad = x[:batch_size], t[:batch_size]
    masks = {name: mask[:batch_size] for name, mask in masks.items()}
    single = with_dtype(model32, "float64")
    with strategy.scope():
        replicated = with_dtype(model32, "float64")
    _, reference = tape_gradients(single, x_grad, t_grad, masks or None)
    distributed = all_reduced_gradients(strategy, replicated, x_grad, t_grad, masks or None)
    gradients = [{"tensor": name, "max_abs_difference": float(np.max(np.abs(reference[name] - g))),
                  "max_relative_difference": _relative_difference(reference[name], g)}
                 for name, g in zip(reference, distributed, strict=True)]

    batches = [(x[(i + 1) * batch_size:(i + 2) * batch_size], t[(i + 1) * batch_size:(i + 2) * batch_size])
               for i in range(steps)]
    on_one_device = without_dropout(single)
    on_one_device.compile(optimizer=keras.optimizers.SGD(learning_rate), loss=keras.losses.CategoricalCrossentropy(
        dtype="float64"))
    on_one_device.fit(np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]),
                      batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    with strategy.scope():
        data_parallel = without_dropout(single)
        optimizer = keras.optimizers.SGD(learning_rate)
    train_steps(strategy, data_parallel, optimizer, batches)
    weights = [_relative_difference(a, b) for a, b in zip(on_one_device.get_weights(), data_parallel.get_weights(),
                                                          strict=True)]
    return {"model": model_name, "parameters": single.count_params(), "replicas": strategy.num_replicas_in_sync,
            "strategy": type(strategy).__name__, "global_batch": batch_size, "dtype": "float64",
            "data": data["description"], "dropout_masks": sorted(masks),
            "gradients": gradients, "max_gradient_relative_difference": max(g["max_relative_difference"]
                                                                             for g in gradients),
            "max_gradient_abs_difference": max(g["max_abs_difference"] for g in gradients),
            "sgd_steps": steps, "learning_rate": learning_rate,
            "max_weight_relative_difference_after_steps": max(weights),
            "gradient_rtol": GRADIENT_RTOL, "weight_rtol": WEIGHT_RTOL,
            "passed": max(g["max_relative_difference"] for g in gradients) <= GRADIENT_RTOL
            and max(weights) <= WEIGHT_RTOL}
