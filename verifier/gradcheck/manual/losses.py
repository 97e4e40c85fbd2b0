"""Manual losses: `forward(u, t)` gives the batch-averaged loss, `backward()` its gradient δ = ∂L/∂u.

The cross-entropies take the logits u and are fused with their output activation, so that
δ = (y − t)/N (C004-1..3): softmax + categorical cross-entropy, sigmoid + binary cross-entropy.
"""
from keras import ops

from gradcheck.manual.step import ScalarStep


def _rows(u):
    """The number of loss terms Keras averages over: every axis but the last (the classes)."""
    count = 1
    for size in u.shape[:-1]:
        count *= size
    return count


class SoftmaxCrossEntropy(ScalarStep):
    """L = −(1/N) Σ_n Σ_k t log y, y = softmax(u) per row; computed from the logits u, stably."""
    fuses = "softmax"

    def forward(self, u, t):
        self.t, self.n = t, _rows(u)
        log_y = u - ops.logsumexp(u, axis=-1, keepdims=True)  # log-softmax without overflow
        self.y = ops.exp(log_y)
        return -ops.sum(t * log_y) / self.n

    def backward(self):
        # ∂L/∂u_k = (y_k Σ_j t_j − t_k)/N: δ = (y − t)/N for targets that sum to 1 per row (C004-3, C002-4); a row of
        # multi-hot targets (keras-io's functional-API guide) sums to more, and the loss still has this derivative.
        return (self.y * ops.sum(self.t, axis=-1, keepdims=True) - self.t) / self.n


class SparseSoftmaxCrossEntropy(SoftmaxCrossEntropy):
    """The same with integer class labels t: t is one-hot encoded first."""
    integer_targets = True

    def forward(self, u, t):
        labels = ops.reshape(ops.cast(t, "int32"), u.shape[:-1] if None not in u.shape[:-1] else (-1,))
        return super().forward(u, ops.one_hot(labels, u.shape[-1], dtype=u.dtype))


class SigmoidBinaryCrossEntropy(ScalarStep):
    """L = mean over batch and units of −t log y − (1 − t) log(1 − y), y = σ(u); computed from u."""
    fuses = "sigmoid"

    def forward(self, u, t):
        self.t, self.count = t, _rows(u) * u.shape[-1]
        self.y = ops.sigmoid(u)
        # −t log σ(u) − (1 − t) log(1 − σ(u)) = softplus(u) − t·u, which never takes log(0).
        return ops.sum(ops.softplus(u) - t * u) / self.count

    def backward(self):
        return (self.y - self.t) / self.count  # δ = y − t, averaged  (C004-2, C003-2)


class HalfSquaredError(ScalarStep):
    """E = (1/N) Σ_n ½ Σ_k (y − t)² (the note's E for N = 1); with an identity output, δ = y − d (C004-1, C000-1)."""
    fuses = None

    def forward(self, y, t):
        self.y, self.t, self.n = y, t, _rows(y)
        return 0.5 * ops.sum((y - t) ** 2) / self.n

    def backward(self):
        return (self.y - self.t) / self.n


class MeanSquaredError(ScalarStep):
    """Keras's mean squared error: L = mean over every entry of (y − t)², so δ = 2(y − t)/(entries)."""
    fuses = None

    def forward(self, y, t):
        self.y, self.t, self.count = y, t, _rows(y) * y.shape[-1]
        return ops.sum((y - t) ** 2) / self.count

    def backward(self):
        return 2 * (self.y - self.t) / self.count


class NoOutputLoss(ScalarStep):
    """No loss on the output (a model compiled without one, whose loss is its layers' add_loss): L = 0, δ = 0."""
    fuses = None

    def forward(self, y, t):
        self.y = y
        return ops.zeros((), dtype=y.dtype)

    def backward(self):
        return ops.zeros_like(self.y)


# Keras loss function name -> the manual loss. Keys are what gradcheck.reference.Loss.name holds.
MANUAL_LOSSES = {
    "categorical_crossentropy": SoftmaxCrossEntropy,
    "sparse_categorical_crossentropy": SparseSoftmaxCrossEntropy,
    "binary_crossentropy": SigmoidBinaryCrossEntropy,
    "mean_squared_error": MeanSquaredError,
    "half_squared_error": HalfSquaredError,
    "no_output_loss": NoOutputLoss,
}
# Options a manual loss reproduces; any other value (label smoothing, another axis, ...) has no manual formula here.
SUPPORTED_LOSS_OPTIONS = {"from_logits": (False, True), "label_smoothing": (0, 0.0), "axis": (-1,),
                          "ignore_class": (None,)}
