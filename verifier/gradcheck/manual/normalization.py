"""Manual batch and layer normalisation, each `forward` next to its `backward`; protocol in manual/layers.py.

Both standardise x over some axes, x̂ = (x − μ)/√(σ² + ε) with the biased variance σ² = mean((x − μ)²),
then scale and shift: y = γ·x̂ + β. BatchNormalization standardises each channel over the batch (and
the spatial axes); LayerNormalization each sample over its feature axes.
"""
import keras
from keras import ops

from gradcheck.manual.step import Step


def standardize(x, axes):
    mean = ops.mean(x, axis=axes, keepdims=True)
    variance = ops.mean(ops.square(x - mean), axis=axes, keepdims=True)
    return mean, variance


def standardize_backward(dxhat, xhat, inv_std, axes, m):
    """dL/dx of x̂ = (x − μ)·inv_std when μ and σ² are taken over `axes` (m entries), the classic derivation
    through the mean and the variance (the book's ch. 6 batch normalisation backward):
    dx = inv_std/m · (m·dx̂ − Σ dx̂ − x̂·Σ(dx̂·x̂)), the sums over `axes`."""
    return inv_std / m * (m * dxhat - ops.sum(dxhat, axis=axes, keepdims=True)
                          - xhat * ops.sum(dxhat * xhat, axis=axes, keepdims=True))


class _Normalization(Step):
    """Shared scale-and-shift: y = γ·x̂ + β with γ and β over the normalised feature axes."""
    weights = ("gamma", "beta")

    def _scale_and_shift(self, xhat, gamma, beta):
        self.xhat, self.gamma, self.has = xhat, gamma, (gamma is not None, beta is not None)
        y = xhat if gamma is None else xhat * gamma
        return y if beta is None else y + beta

    def _parameter_grads(self, dout, axes):
        # dL/dγ = Σ dout·x̂, dL/dβ = Σ dout, over every axis γ does not have
        self.grads = {}
        if self.has[0]:
            self.grads["gamma"] = ops.sum(dout * self.xhat, axis=axes)
        if self.has[1]:
            self.grads["beta"] = ops.sum(dout, axis=axes)
        return dout if self.gamma is None else dout * self.gamma  # dL/dx̂


class BatchNormalization(_Normalization):
    """Keras BatchNormalization on the last axis. Training: the batch's statistics (μ, σ² over every axis but
    the channels); inference: the moving averages, constants, so dx = dout·γ/√(σ²_moving + ε)."""
    weights = ("gamma", "beta", "moving_mean", "moving_variance")

    def __init__(self, epsilon: float, training: bool):
        self.epsilon, self.training = epsilon, training

    def forward(self, x, gamma=None, beta=None, moving_mean=None, moving_variance=None):
        self.axes = tuple(range(len(x.shape) - 1))
        if self.training:
            mean, variance = standardize(x, self.axes)
        else:
            mean, variance = ops.cast(moving_mean, x.dtype), ops.cast(moving_variance, x.dtype)
        self.inv_std = 1 / ops.sqrt(variance + self.epsilon)
        return self._scale_and_shift((x - mean) * self.inv_std, gamma, beta)

    def backward(self, dout):
        dxhat = self._parameter_grads(dout, self.axes)
        if not self.training:
            return dxhat * self.inv_std
        m = 1
        for axis in self.axes:
            m *= dout.shape[axis] if dout.shape[axis] is not None else ops.shape(dout)[axis]
        return standardize_backward(dxhat, self.xhat, self.inv_std, self.axes, m)


class LayerNormalization(_Normalization):
    """Keras LayerNormalization: μ, σ² of each sample over `axes` (γ and β have those axes' shape)."""

    def __init__(self, axes, epsilon: float):
        self.axes, self.epsilon = tuple(axes), epsilon

    def forward(self, x, gamma=None, beta=None):
        rank = len(x.shape)
        self.axes = tuple(sorted(a % rank for a in self.axes))
        self.other_axes = tuple(a for a in range(rank) if a not in self.axes)
        mean, variance = standardize(x, self.axes)
        self.inv_std = 1 / ops.sqrt(variance + self.epsilon)
        return self._scale_and_shift((x - mean) * self.inv_std, gamma, beta)

    def backward(self, dout):
        dxhat = self._parameter_grads(dout, self.other_axes)
        m = 1
        for axis in self.axes:
            m *= dout.shape[axis]
        return standardize_backward(dxhat, self.xhat, self.inv_std, self.axes, m)


class FeatureStandardization(Step):
    """Keras's Normalization (a preprocessing layer adapted to the data): y = (x − mean)/s with s = max(√variance, ε),
    fixed statistics, no trainable weights; so dL/dx = dout/s. With invert=True, y = mean + x·s and dL/dx = dout·s."""

    def __init__(self, mean, variance, invert: bool):
        self.mean, self.variance, self.invert = mean, variance, invert

    def forward(self, x):
        self.s = ops.maximum(ops.sqrt(ops.cast(self.variance, x.dtype)), keras.backend.epsilon())
        mean = ops.cast(self.mean, x.dtype)
        return mean + x * self.s if self.invert else (x - mean) / self.s

    def backward(self, dout):
        return dout * self.s if self.invert else dout / self.s
