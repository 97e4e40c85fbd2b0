"""A manual-backprop twin of a Keras Sequential model, and the Keras (reference) forward it is checked against.

The twin reads the Keras layers' weights live (so an `assign` to a Keras variable is seen by both)
and splits each Dense/Conv2D into its linear part and its activation. The loss is one of LOSSES;
by default the one paired with the output activation, and then fused with it so that
δ = ∂E/∂u = y − t (C004-1..3): softmax + categorical cross-entropy, sigmoid + binary
cross-entropy, identity + ½ squared error. Other pairings (sigmoid + ½ squared error, C000-1's
variant) backpropagate through the output activation. Parameters are named "<layer>/kernel" and
"<layer>/bias" on both sides.
"""
import keras
import numpy as np
import tensorflow as tf

from backprop_suite.manual import layers as manual

ACTIVATIONS = {"relu": manual.ReLU, "sigmoid": manual.Sigmoid, "tanh": manual.Tanh, "linear": manual.Identity}
LOSSES = ("categorical_crossentropy", "binary_crossentropy", "half_squared_error")
FUSED_LOSSES = {("softmax", "categorical_crossentropy"): manual.SoftmaxCrossEntropy,
                ("sigmoid", "binary_crossentropy"): manual.SigmoidBinaryCrossEntropy,
                ("linear", "half_squared_error"): manual.IdentityHalfSquaredError}
DEFAULT_LOSS = {activation: loss for activation, loss in FUSED_LOSSES}


def parameters(model: keras.Model) -> dict[str, keras.Variable]:
    """The trainable variables by "<layer>/<weight>" name, in layer order."""
    return {f"{layer.name}/{v.name}": v for layer in model.layers for v in layer.trainable_weights}


def with_dtype(model: keras.Sequential, dtype: str) -> keras.Sequential:
    """A copy of a Sequential model computing in `dtype`, with the same weights."""
    config = model.get_config()
    for layer_config in config["layers"]:
        layer_config["config"]["dtype"] = dtype
    copy = keras.Sequential.from_config(config)
    copy.set_weights([w.astype(dtype) for w in model.get_weights()])
    return copy


def output_activation(model: keras.Model) -> str:
    return model.layers[-1].activation.__name__


def resolve_loss(model: keras.Model, loss: str | None) -> str:
    """`loss`, or the one paired with the model's output activation; ValueError for a pairing without a twin."""
    activation = output_activation(model)
    loss = loss or DEFAULT_LOSS.get(activation)
    if loss not in LOSSES:
        raise ValueError(f"{model.name}: give a loss (one of {', '.join(LOSSES)}) for output activation {activation!r}")
    if (activation, loss) not in FUSED_LOSSES and (loss != "half_squared_error" or activation not in ACTIVATIONS):
        raise ValueError(f"{model.name}: no manual twin for output activation {activation!r} with loss {loss!r}")
    return loss


def reference_loss(model: keras.Model, x, t, dropout_masks=None, loss=None):
    """The loss by Keras's own layers and losses; dropout applies the given masks (inverted)."""
    y = x
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dropout):
            mask = (dropout_masks or {}).get(layer.name)
            y = y if mask is None else y * tf.cast(mask, y.dtype) / (1 - layer.rate)
        else:
            y = layer(y)
    loss = resolve_loss(model, loss)
    if loss == "categorical_crossentropy":
        return tf.reduce_mean(keras.losses.categorical_crossentropy(t, y))
    if loss == "binary_crossentropy":
        return tf.reduce_mean(keras.losses.binary_crossentropy(t, y))
    # ½ Σ_k (y − t)² averaged over the batch = Keras's mean squared error (a mean over K) · K / 2
    return tf.reduce_mean(keras.losses.mean_squared_error(t, y)) * y.shape[-1] / 2


class ManualTwin:
    """Loss and every weight's gradient of a Keras Sequential model, by hand-written backprop."""

    def __init__(self, model: keras.Sequential, dtype: str = "float64", loss: str | None = None):
        self.model, self.dtype = model, dtype
        loss = resolve_loss(model, loss)
        fused = FUSED_LOSSES.get((output_activation(model), loss))
        # Unfused, the output activation is an ordinary step and ½ squared error acts on y.
        self.loss_layer = fused() if fused else manual.IdentityHalfSquaredError()
        self.steps = []  # (keras layer, manual layer)
        for position, layer in enumerate(model.layers):
            last = position == len(model.layers) - 1
            self.steps += [(layer, step) for step in self._manual_steps(layer, fuse_activation=last and fused)]

    def _manual_steps(self, layer, fuse_activation: bool) -> list:
        if isinstance(layer, keras.layers.Dense):
            steps = [manual.Affine(layer.name, None, None)]
        elif isinstance(layer, keras.layers.Conv2D):
            if layer.padding != "valid" or tuple(layer.strides) != (1, 1) or tuple(layer.dilation_rate) != (1, 1):
                raise NotImplementedError(f"{layer.name}: the manual Conv2D is valid, stride 1, no dilation")
            steps = [manual.Conv2D(layer.name, None, None)]
        elif isinstance(layer, keras.layers.MaxPooling2D):
            if tuple(layer.pool_size) != tuple(layer.strides) or layer.pool_size[0] != layer.pool_size[1] \
                    or layer.padding != "valid":
                raise NotImplementedError(f"{layer.name}: the manual max-pool is square, stride = pool, valid")
            return [manual.MaxPool2D(layer.pool_size[0])]
        elif isinstance(layer, keras.layers.Dropout):
            return [manual.Dropout(layer.name, layer.rate)]
        elif isinstance(layer, keras.layers.Flatten):
            return [manual.Flatten()]
        else:
            raise NotImplementedError(f"{layer.name}: no manual twin for {type(layer).__name__}")
        activation = layer.activation.__name__
        if fuse_activation:
            return steps
        if activation not in ACTIVATIONS:
            raise NotImplementedError(f"{layer.name}: no manual twin for activation {activation!r} here")
        return steps + [ACTIVATIONS[activation]()]

    def forward(self, x, t, dropout_masks=None):
        """The loss; keeps what backward needs.

        dropout_masks: {dropout layer name: 0/1 mask}, or a callable (manual.Dropout, its input) -> mask
        that draws one (a training step); None: dropout is the identity (inference).
        """
        y = tf.cast(x, self.dtype)
        for layer, step in self.steps:
            if hasattr(step, "set_parameters"):  # read live, so an assign to a Keras variable is seen
                step.set_parameters(*(tf.cast(w.value, self.dtype) for w in layer.trainable_weights))
            if isinstance(step, manual.Dropout):
                mask = dropout_masks(step, y) if callable(dropout_masks) else (dropout_masks or {}).get(step.name)
                y = step.forward(y, mask)
            else:
                y = step.forward(y)
        return self.loss_layer.forward(y, tf.cast(t, self.dtype))

    def gradient_tensors(self) -> list[tf.Tensor]:
        """Every weight's gradient, in parameters(model) order, after forward (C002-5: forward first)."""
        dout, grads = self.loss_layer.backward(), {}
        for layer, step in reversed(self.steps):
            dout = step.backward(dout)
            for weight, grad in getattr(step, "grads", {}).items():
                grads[f"{layer.name}/{weight}"] = grad
        return [grads[name] for name in parameters(self.model)]

    def loss_and_gradient_tensors(self, x, t, dropout_masks=None) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """forward then backward as tensors: traceable, so a training step can compile it into a tf.function."""
        loss = self.forward(x, t, dropout_masks)
        return loss, self.gradient_tensors()

    def loss_and_gradients(self, x, t, dropout_masks=None) -> tuple[float, dict[str, np.ndarray]]:
        """The loss and every weight's gradient by "<layer>/<weight>" name, as NumPy."""
        loss, grads = self.loss_and_gradient_tensors(x, t, dropout_masks)
        return float(loss), {name: grad.numpy() for name, grad in zip(parameters(self.model), grads, strict=True)}

    def kink_pattern(self, x, t, dropout_masks=None) -> np.ndarray:
        """Which side of every ReLU kink and which max-pool arg-max the forward took, as one vector."""
        self.forward(x, t, dropout_masks)
        parts = [np.ravel(step.mask) for _, step in self.steps if isinstance(step, manual.ReLU)]
        parts += [np.ravel(step.argmax) for _, step in self.steps if isinstance(step, manual.MaxPool2D)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
