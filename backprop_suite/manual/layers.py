"""Manual layers, each `forward` next to its `backward`: dense, activations, dropout, reshaping, merging.

Protocol: `forward(x, **weights)` keeps what `backward` needs and returns y; `backward(dout)` returns
dL/dx (a list for a layer with several inputs) and sets `self.grads` {weight name: dL/dweight}.
`weights` names the Keras weights a layer reads ("kernel", "bias", ...), passed by that name.
Conventions (Keras's, so that weights copy straight from the Keras layer): NHWC tensors, conv
kernels (kh, kw, c_in, c_out), Dense W as (in, out), inverted dropout (kept units scaled by
1/(1 − rate)), losses averaged over the batch. Written in keras.ops with forward ops only (matmul,
conv, where, pad, ...): never an autodiff call or a gradient kernel, which would check the framework
against itself (tests/test_manual_layers.py enforces this). `dout` is never modified in place.
"""
import numpy as np
from keras import ops


class Affine:
    """y = x·W + b (Keras Dense without its activation; b absent when use_bias=False)."""
    weights = ("kernel", "bias")

    def forward(self, x, kernel, bias=None):
        self.x, self.W, self.has_bias = x, kernel, bias is not None
        y = ops.matmul(x, kernel)
        return y if bias is None else y + bias

    def backward(self, dout):
        # dL/dW = xᵀ·dout, dL/db = Σ_n dout, dL/dx = dout·Wᵀ  (C002-4; C002-3 entrywise). Inputs of rank > 2
        # (Dense on the last axis) flatten their leading axes into the batch first.
        x2, d2 = ops.reshape(self.x, (-1, self.x.shape[-1])), ops.reshape(dout, (-1, dout.shape[-1]))
        self.grads = {"kernel": ops.matmul(ops.transpose(x2), d2)}
        if self.has_bias:
            self.grads["bias"] = ops.sum(d2, axis=0)
        return ops.matmul(dout, ops.transpose(self.W))


class ReLU:
    def forward(self, x):
        y = ops.relu(x)  # max(x, 0) by the framework's op, which TensorFlow fuses into a conv or matmul before it
        self.mask = ops.sign(y)  # 1 where x > 0, else 0, as a number: the backward is one multiplication
        return y

    def backward(self, dout):
        # Gradient passes where x > 0 (C002-3). At exactly x = 0 it is 0: the book's `x <= 0`
        # zeroing, which TensorFlow's ReluGrad follows; the slide's `x < 0` would pass it (C002-4).
        return dout * self.mask


class Sigmoid:
    def forward(self, x):
        self.y = ops.sigmoid(x)
        return self.y

    def backward(self, dout):
        return dout * self.y * (1 - self.y)  # σ′ = y(1 − y)  (C004-4)


class Tanh:
    def forward(self, x):
        self.y = ops.tanh(x)
        return self.y

    def backward(self, dout):
        return dout * (1 - self.y**2)  # tanh′ = 1 − y²


class Identity:
    def forward(self, x):
        return x

    def backward(self, dout):
        return dout


class Softmax:
    """y = softmax(x) along `axis`, not fused with a loss (a fused one is in manual/losses.py)."""

    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        self.y = ops.softmax(x, axis=self.axis)
        return self.y

    def backward(self, dout):
        # The Jacobian ∂y_i/∂x_j = y_i(δ_ij − y_j) applied to dout: dx = y ⊙ (dout − Σ_j dout_j·y_j)
        return self.y * (dout - ops.sum(dout * self.y, axis=self.axis, keepdims=True))


ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh, "linear": Identity, "softmax": Softmax}


class Dropout:
    """Inverted dropout with a given 0/1 mask (None: inference, the identity)."""

    def __init__(self, rate: float):
        self.rate = rate

    def forward(self, x, mask=None):
        self.scale = None if mask is None else ops.cast(mask, x.dtype) / (1 - self.rate)
        return x if self.scale is None else x * self.scale

    def backward(self, dout):
        return dout if self.scale is None else dout * self.scale  # the forward's mask, reused


class Reshape:
    """Flatten, or Reshape to `target` (per sample); the backward puts the gradient back in the input's shape."""

    def __init__(self, target=(-1,)):
        self.target = tuple(target)

    def forward(self, x):
        self.shape = ops.shape(x)
        return ops.reshape(x, (-1, *self.target) if self.target != (-1,) else (self.shape[0], -1))

    def backward(self, dout):
        return ops.reshape(dout, self.shape)


class Rescaling:
    """y = x·scale + offset (Keras's Rescaling: pixels to [0, 1] and the like; scale and offset are numbers or
    per-channel arrays), so dL/dx = dout·scale."""

    def __init__(self, scale, offset):
        self.scale, self.offset = scale, offset

    def forward(self, x):
        self.factor = ops.cast(self.scale, x.dtype)  # cast as Keras casts it (a float goes through float32 there)
        return x * self.factor + ops.cast(self.offset, x.dtype)

    def backward(self, dout):
        return dout * self.factor


class ZeroPadding2D:
    """Zeros around the rows and columns: ((top, bottom), (left, right)); the backward crops them off."""

    def __init__(self, padding):
        self.padding = padding

    def forward(self, x):
        (self.top, bottom), (self.left, right) = self.padding
        self.h, self.w = x.shape[1], x.shape[2]
        return ops.pad(x, [[0, 0], [self.top, bottom], [self.left, right], [0, 0]])

    def backward(self, dout):
        return dout[:, self.top:self.top + self.h, self.left:self.left + self.w, :]


class Add:
    """y = Σ_i x_i: each input receives dout whole (and a tensor used twice sums its two gradients)."""

    def forward(self, xs):
        self.count = len(xs)
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return y

    def backward(self, dout):
        return [dout] * self.count


class Concatenate:
    """y = [x_1, x_2, ...] along `axis`; the backward splits dout at the same boundaries."""

    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, xs):
        self.sizes = [x.shape[self.axis] for x in xs]
        return ops.concatenate(xs, axis=self.axis)

    def backward(self, dout):
        return ops.split(dout, list(np.cumsum(self.sizes)[:-1]), axis=self.axis)
