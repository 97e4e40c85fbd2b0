"""Manual layers, each `forward` next to its `backward`: dense, activations, dropout, reshaping, merging.

Protocol: `forward(x, **weights)` keeps what `backward` needs and returns y; `backward(dout)` returns
dL/dx (a list for a layer with several inputs) and sets `self.grads` {weight name: dL/dweight}.
`weights` names the Keras weights a layer reads ("kernel", "bias", ...), passed by that name.
Conventions (Keras's, so that weights copy straight from the Keras layer): NHWC tensors, conv
kernels (kh, kw, c_in, c_out), Dense W as (in, out), inverted dropout (kept units scaled by
1/(1 − rate)), losses averaged over the batch. Keras masks (a 0/1 mask over a sequence's steps, (N, T),
made by Embedding(mask_zero=True) or Masking): a layer whose formula follows them says `follows_masks = True`;
its `forward` also takes `mask=` (its input's mask, or None) and sets `self.output_mask` (its output's).
Written in keras.ops with forward ops only (matmul, conv, where, pad, ...): never an autodiff call or a
gradient kernel, which would check the framework against itself (tests/test_manual_layers.py enforces this).
`dout` is never modified in place.
"""
import numpy as np
from keras import ops

from gradcheck.backends import adapter
from gradcheck.manual.step import Step


def accumulate(sums: dict, key, value) -> None:
    """sums[key] += value, the first value stored as it is: the multivariable chain rule's sum over paths (a fork, a
    shared layer, a weight shared across time steps)."""
    sums[key] = value if key not in sums else sums[key] + value


class Dense(Step):
    """y = x·W + b: the notes' Affine layer (C002-4), Keras's Dense without its activation (b absent when
    use_bias=False)."""
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


class ReLU(Step):
    KINKS = (0.0,)  # where the derivative jumps: what finite differences must not step across (kinks.py)

    def forward(self, x):
        y = ops.relu(x)  # max(x, 0) by the framework's op, which TensorFlow fuses into a conv or matmul before it
        self.mask = ops.sign(y)  # 1 where x > 0, else 0, as a number: the backward is one multiplication
        return y

    def backward(self, dout):
        # Gradient passes where x > 0 (C002-3). At exactly x = 0 it is 0: the book's `x <= 0`
        # zeroing, which TensorFlow's ReluGrad follows; the slide's `x < 0` would pass it (C002-4).
        return dout * self.mask


class Sigmoid(Step):
    def forward(self, x):
        self.y = ops.sigmoid(x)
        return self.y

    def backward(self, dout):
        return dout * self.y * (1 - self.y)  # σ′ = y(1 − y)  (C004-4)


class Tanh(Step):
    def forward(self, x):
        self.y = ops.tanh(x)
        return self.y

    def backward(self, dout):
        return dout * (1 - self.y**2)  # tanh′ = 1 − y²


class Identity(Step):
    def forward(self, x):
        return x

    def backward(self, dout):
        return dout


class Softmax(Step):
    """y = softmax(x) along `axis`, not fused with a loss (a fused one is in manual/losses.py)."""

    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        self.y = ops.softmax(x, axis=self.axis)
        return self.y

    def backward(self, dout):
        # The Jacobian ∂y_i/∂x_j = y_i(δ_ij − y_j) applied to dout: dx = y ⊙ (dout − Σ_j dout_j·y_j)
        return self.y * (dout - ops.sum(dout * self.y, axis=self.axis, keepdims=True))


# At a kink the derivative does not exist and each framework's autodiff takes a side of it; the formulas take the
# backend's side (its adapter's RIGHT_SLOPE_AT_ZERO), so that they agree with its autodiff there too (each measured
# in tests/test_manual_layers.py). A leaky ReLU at 0: TensorFlow and PyTorch take the negative slope, JAX the slope
# 1. SELU at 0: TensorFlow takes the right slope (scale), JAX and PyTorch the left (scale·α). The other kinks here
# (ReLU and ReLU6 at 0 and 6, ELU at 0) are the same on every backend.


def _positive(x, activation: str):
    """Where the activation takes its right-hand slope: x > 0, or x ≥ 0 on the backends that take it at 0."""
    right_at_zero = activation in adapter().RIGHT_SLOPE_AT_ZERO
    return ops.greater_equal(x, 0) if right_at_zero else ops.greater(x, 0)


class ReLU6(Step):
    KINKS = (0.0, 6.0)

    def forward(self, x):
        self.x = x
        return ops.relu6(x)  # min(max(x, 0), 6): MobileNet's ReLU, keras.layers.ReLU(max_value=6)

    def backward(self, dout):
        return ops.where(ops.logical_and(self.x > 0, self.x < 6), dout, 0)  # 0 at both kinks, on every backend


class LeakyReLU(Step):
    """y = x for x > 0, else slope·x."""
    KINKS = (0.0,)

    def __init__(self, negative_slope: float = 0.2):  # keras.activations.leaky_relu's default (the layer's is 0.3)
        self.slope = negative_slope

    def forward(self, x):
        self.x = x
        return ops.leaky_relu(x, negative_slope=self.slope)

    def backward(self, dout):
        return ops.where(_positive(self.x, "leaky_relu"), dout, dout * ops.cast(self.slope, dout.dtype))


class ELU(Step):
    """y = x for x > 0, else α(eˣ − 1); so y′ = 1, else αeˣ = y + α (the output gives the derivative, as
    σ′ = y(1 − y) does)."""

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha

    def forward(self, x):
        self.x, self.y = x, ops.elu(x, alpha=self.alpha)
        return self.y

    def backward(self, dout):
        return ops.where(self.x > 0, dout, dout * (self.y + ops.cast(self.alpha, dout.dtype)))


class SELU(Step):
    """y = scale·ELU_α(x) with Klambauer et al.'s fixed α and scale; y′ = scale for x > 0, else y + scale·α."""
    KINKS = (0.0,)
    ALPHA, SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946

    def forward(self, x):
        self.x, self.y = x, ops.selu(x)
        return self.y

    def backward(self, dout):
        return ops.where(_positive(self.x, "selu"), dout * self.SCALE, dout * (self.y + self.SCALE * self.ALPHA))


class Softplus(Step):
    def forward(self, x):
        self.x = x
        return ops.softplus(x)  # log(1 + eˣ)

    def backward(self, dout):
        return dout * ops.sigmoid(self.x)  # d log(1 + eˣ)/dx = eˣ/(1 + eˣ) = σ(x)


class SiLU(Step):
    """y = x·σ(x) (swish); y′ = σ + x·σ(1 − σ) = σ(1 + x(1 − σ))."""

    def forward(self, x):
        self.x, self.s = x, ops.sigmoid(x)
        return ops.silu(x)

    def backward(self, dout):
        return dout * self.s * (1 + self.x * (1 - self.s))


class GELU(Step):
    """y = x·Φ(x) = ½x(1 + erf(cx)), c = 1/√2, Φ the standard normal CDF; so y′ = ½(1 + erf(cx)) + x·c·e^(−c²x²)/√π,
    which is Φ(x) + x·φ(x). keras.activations.gelu ("gelu") is this exact one (keras.ops.gelu defaults to the tanh
    approximation: another function, so it gets no formula). c is cast as the backend's gelu casts it: through
    float32 on TensorFlow (its float64 gelu is 4e-9 off x·Φ(x)), exactly elsewhere (as λ in manual/regularizers.py)."""

    def forward(self, x):
        self.x = x
        return ops.gelu(x, approximate=False)

    def backward(self, dout):
        c = ops.cast(0.7071067811865476, self.x.dtype)
        return dout * (0.5 * (1 + ops.erf(c * self.x)) + self.x * c * ops.exp(-(c * self.x) ** 2) / np.sqrt(np.pi))


class PReLU(Step):
    """A leaky ReLU whose negative slope α is learned, per entry or shared along `shared_axes`: Keras computes
    y = relu(x) − α·relu(−x), so dL/dx = dout for x > 0, α·dout for x < 0 and 0 at exactly 0 (relu′(0) = 0 on both
    terms), and dL/dα = Σ dout·min(x, 0) over the batch and every shared axis."""
    KINKS = (0.0,)
    weights = ("alpha",)

    def forward(self, x, alpha):
        self.x, self.alpha = x, alpha
        return ops.relu(x) - alpha * ops.relu(-x)

    def backward(self, dout):
        per_entry = dout * ops.minimum(self.x, 0)
        shared = [axis + 1 for axis, size in enumerate(self.alpha.shape) if size == 1 and self.x.shape[axis + 1] != 1]
        self.grads = {"alpha": ops.sum(ops.sum(per_entry, axis=0), axis=[a - 1 for a in shared], keepdims=True)
                      if shared else ops.sum(per_entry, axis=0)}
        return ops.where(self.x > 0, dout, ops.where(self.x < 0, dout * self.alpha, 0))


class HardSigmoid(Step):
    """y = min(max(x/6 + ½, 0), 1) (MobileNetV3): y′ = 1/6 inside (−3, 3), 0 outside (and at its kinks ±3)."""
    KINKS = (-3.0, 3.0)

    def forward(self, x):
        self.x = x
        return ops.hard_sigmoid(x)

    def backward(self, dout):
        return ops.where(ops.logical_and(self.x > -3, self.x < 3), dout / 6, 0)


class HardSiLU(Step):
    """y = x·hard_sigmoid(x) (MobileNetV3's hard swish): y′ = (2x + 3)/6 inside (−3, 3), 1 above it, 0 below."""
    KINKS = (-3.0, 3.0)

    def forward(self, x):
        self.x = x
        return ops.hard_silu(x)

    def backward(self, dout):
        inside = ops.logical_and(self.x > -3, self.x < 3)
        return dout * ops.where(inside, (2 * self.x + 3) / 6, ops.where(self.x >= 3, 1, 0))


class RepeatVector(Step):
    """y[n, r] = x[n] for each of the n repeats: x's gradient is dout summed over the repeats."""

    def __init__(self, repeats: int):
        self.repeats = repeats

    def forward(self, x):
        return ops.repeat(ops.expand_dims(x, 1), self.repeats, axis=1)

    def backward(self, dout):
        return ops.sum(dout, axis=1)


class LayerScale(Step):
    """y = x·γ with a learned γ per channel (the last axis; ConvNeXt): dL/dx = dout·γ, dL/dγ = Σ dout·x over every
    other axis."""
    weights = ("gamma",)

    def forward(self, x, gamma):
        self.x, self.gamma = x, gamma
        return x * gamma

    def backward(self, dout):
        self.grads = {"gamma": ops.sum(dout * self.x, axis=tuple(range(len(self.x.shape) - 1)))}
        return dout * self.gamma


ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh, "linear": Identity, "softmax": Softmax,
               "relu6": ReLU6, "leaky_relu": LeakyReLU, "elu": ELU, "selu": SELU, "softplus": Softplus, "silu": SiLU,
               "gelu": GELU, "hard_sigmoid": HardSigmoid, "hard_silu": HardSiLU}
# keyed by the keras.activations function's __name__ ("swish" is silu, "hard_swish" hard_silu)


class Dropout(Step):
    """Inverted dropout with a given 0/1 mask (None: inference, the identity)."""

    def __init__(self, rate: float):
        self.rate = rate

    def forward(self, x, mask=None):
        self.scale = None if mask is None else ops.cast(mask, x.dtype) / (1 - self.rate)
        return x if self.scale is None else x * self.scale

    def backward(self, dout):
        return dout if self.scale is None else dout * self.scale  # the forward's mask, reused


class Reshape(Step):
    """Flatten, or Reshape to `target` (per sample); the backward puts the gradient back in the input's shape."""

    def __init__(self, target=(-1,)):
        self.target = tuple(target)

    def forward(self, x):
        self.shape = ops.shape(x)
        return ops.reshape(x, (-1, *self.target) if self.target != (-1,) else (self.shape[0], -1))

    def backward(self, dout):
        return ops.reshape(dout, self.shape)


class Rescaling(Step):
    """y = x·scale + offset (Keras's Rescaling: pixels to [0, 1] and the like; scale and offset are numbers or
    per-channel arrays), so dL/dx = dout·scale."""

    def __init__(self, scale, offset):
        self.scale, self.offset = scale, offset

    def forward(self, x):
        self.factor = ops.cast(self.scale, x.dtype)  # cast as Keras casts it (a float goes through float32 there)
        return x * self.factor + ops.cast(self.offset, x.dtype)

    def backward(self, dout):
        return dout * self.factor


class ZeroPadding2D(Step):
    """Zeros around the rows and columns: ((top, bottom), (left, right)); the backward crops them off."""

    def __init__(self, padding):
        self.padding = padding

    def forward(self, x):
        (self.top, bottom), (self.left, right) = self.padding
        self.h, self.w = x.shape[1], x.shape[2]
        return ops.pad(x, [[0, 0], [self.top, bottom], [self.left, right], [0, 0]])

    def backward(self, dout):
        return dout[:, self.top:self.top + self.h, self.left:self.left + self.w, :]


def summed_to_shape(grad, shape):
    """The gradient of an input of `shape` that the merge broadcast to grad's shape (a squeeze-and-excite's (N, 1, 1, C)
    gates times an (N, H, W, C) map): summed over the axes it was repeated along, so it has the input's shape."""
    extra = len(grad.shape) - len(shape)
    if extra:
        grad = ops.sum(grad, axis=tuple(range(extra)))
    axes = tuple(axis for axis, size in enumerate(shape) if size == 1 and grad.shape[axis] != 1)
    return ops.sum(grad, axis=axes, keepdims=True) if axes else grad


class _Merge(Step):
    """A merge of inputs that Keras broadcasts to one shape: `_forward` and `_backward` on the broadcast shape, each
    input's gradient then summed back to its own shape (summed_to_shape)."""

    def forward(self, xs):
        self.shapes = [x.shape for x in xs]
        return self._forward(xs)

    def backward(self, dout):
        return [summed_to_shape(g, shape) for g, shape in zip(self._backward(dout), self.shapes, strict=True)]


class Add(_Merge):
    """y = Σ_i x_i: each input receives dout whole (and a tensor used twice sums its two gradients)."""

    def _forward(self, xs):
        self.count = len(xs)
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return y

    def _backward(self, dout):
        return [dout] * self.count


class Dot(Step):
    """keras.layers.Dot without normalize, per sample: rank 2, y_n = Σ_k x_nk·z_nk (kept as (N, 1)); rank 3, the
    contraction of x's axis a with z's axis b, y_npq = Σ_k x_n[p, k]·z_n[q, k] (with a, b = 2, 2; an axis 1 takes the
    other place). Each input's gradient contracts dout with the other input: dx_npk = Σ_q dout_npq·z_nqk, and
    dz_nqk = Σ_p dout_npq·x_npk (einsum with the same letters)."""

    def __init__(self, axes):
        self.axes = axes if isinstance(axes, (list, tuple)) else (axes, axes)

    def forward(self, xs):
        self.x, self.z = xs
        rank = len(self.x.shape)
        if rank == 2:
            return ops.sum(self.x * self.z, axis=1, keepdims=True)
        a, b = (axis % rank for axis in self.axes)
        self.letters = ("npk" if a == 2 else "nkp", "nqk" if b == 2 else "nkq")
        return ops.einsum(f"{self.letters[0]},{self.letters[1]}->npq", self.x, self.z)

    def backward(self, dout):
        if len(self.x.shape) == 2:
            return [dout * self.z, dout * self.x]
        x_letters, z_letters = self.letters
        return [ops.einsum(f"npq,{z_letters}->{x_letters}", dout, self.z),
                ops.einsum(f"npq,{x_letters}->{z_letters}", dout, self.x)]


class WithConstant(Step):
    """A merge's op of one tensor and a number c, as Keras records `x + 3.0`, `x * (1/6)` or `1 - x` in a Functional
    graph (MobileNetV3's hard sigmoid): the merge's formula with c as the other, constant, input."""

    def __init__(self, merge, constant: float, tensor_first: bool = True):
        self.merge, self.constant, self.tensor_first = merge(), constant, tensor_first

    def forward(self, x):
        c = ops.convert_to_tensor(self.constant, x.dtype)  # exact (ops.cast rounds a Python float through float32)
        return self.merge.forward([x, c] if self.tensor_first else [c, x])

    def backward(self, dout):
        grads = self.merge.backward(dout)
        return grads[0 if self.tensor_first else 1]


class ScaledSum(_Merge):
    """y = x_1 + s·x_2 with a constant s (InceptionResNetV2's CustomScaleLayer: the residual scaled): dout to the
    first input, s·dout to the second."""

    def __init__(self, scale: float):
        self.scale = scale

    def _forward(self, xs):
        return xs[0] + xs[1] * self.scale

    def _backward(self, dout):
        return [dout, dout * self.scale]


class Subtract(_Merge):
    """y = x_1 − x_2: dout to the first input, −dout to the second."""

    def _forward(self, xs):
        return xs[0] - xs[1]

    def _backward(self, dout):
        return [dout, -dout]


class Average(_Merge):
    """y = Σ_i x_i / n: each input receives dout/n."""

    def _forward(self, xs):
        self.count = len(xs)
        return Add().forward(xs) / self.count

    def _backward(self, dout):
        return [dout / self.count] * self.count


class Multiply(_Merge):
    """y = Π_i x_i: input i receives dout·Π_{j≠i} x_j (the product of the others, not y/x_i, which fails at 0)."""

    def _forward(self, xs):
        self.xs = xs
        return self._product(xs)

    @staticmethod
    def _product(xs):
        y = xs[0]
        for x in xs[1:]:
            y = y * x
        return y

    def _backward(self, dout):
        return [dout * self._product(self.xs[:i] + self.xs[i + 1:]) for i in range(len(self.xs))]


# A tie between Maximum's (or Minimum's) inputs has no derivative; TensorFlow gives the whole gradient to the first
# input, JAX and PyTorch half to each (the adapter's FIRST_INPUTS_SHARE_OF_A_TIE, measured in
# tests/test_manual_layers.py). Ties are common: two ReLU branches that are both 0.


class Maximum(_Merge):
    """y = max(x_1, x_2, ...), taken pairwise left to right as Keras does: each pair's gradient goes to the input that
    won it (a tie shared as the backend shares it)."""
    pick = staticmethod(ops.maximum)
    wins = staticmethod(ops.greater)

    def _forward(self, xs):
        self.pairs, y = [], xs[0]
        for x in xs[1:]:
            self.pairs.append((y, x))
            y = self.pick(y, x)
        return y

    def _backward(self, dout):
        tie = adapter().FIRST_INPUTS_SHARE_OF_A_TIE
        grads = []
        for left, right in reversed(self.pairs):  # the last pair first: its left side is the running result
            share = ops.where(self.wins(left, right), 1.0, ops.where(ops.equal(left, right), tie, 0.0))
            share = ops.cast(share, dout.dtype)
            grads.append(dout * (1 - share))
            dout = dout * share
        return [dout] + grads[::-1]


class Minimum(Maximum):
    pick = staticmethod(ops.minimum)
    wins = staticmethod(ops.less)


class Embedding(Step):
    """y = E[ids], the rows of the table E (input_dim × output_dim) that the token ids pick. dL/dE = onehot(ids)ᵀ·dout:
    row i sums dout over every place where token i occurs (a matrix product, as Affine's xᵀ·dout, with the one-hot
    rows as x). The ids get no gradient (zeros stand for it: nothing upstream of them has weights). With mask_zero,
    its output's Keras mask is ids ≠ 0 (token 0 is padding)."""
    weights = ("embeddings",)
    follows_masks = True

    def __init__(self, mask_zero: bool = False):
        self.mask_zero = mask_zero

    def forward(self, ids, embeddings, mask=None):
        self.ids, self.rows = ops.cast(ids, "int32"), embeddings.shape[0]
        self.output_mask = ops.not_equal(self.ids, 0) if self.mask_zero else None
        return ops.take(embeddings, self.ids, axis=0)

    def backward(self, dout):
        one_hot = ops.one_hot(ops.reshape(self.ids, (-1,)), self.rows, dtype=dout.dtype)
        self.grads = {"embeddings": ops.matmul(ops.transpose(one_hot), ops.reshape(dout, (-1, dout.shape[-1])))}
        return ops.zeros(ops.shape(self.ids), dout.dtype)


class Masking(Step):
    """y = x at the steps where some feature differs from mask_value, 0 at the others (a padded step), and that test is
    the output's Keras mask m (N, T). dL/dx = m·dout: a padded step passes nothing back."""
    follows_masks = True

    def __init__(self, mask_value):
        self.mask_value = mask_value

    def forward(self, x, mask=None):  # a mask arriving is replaced, as Keras's Masking does
        keep = ops.any(ops.not_equal(x, self.mask_value), axis=-1, keepdims=True)
        self.keep, self.output_mask = keep, ops.squeeze(keep, axis=-1)
        return ops.where(keep, x, ops.zeros_like(x))

    def backward(self, dout):
        return ops.where(self.keep, dout, ops.zeros_like(dout))


class UpSampling2D(Step):
    """Nearest-neighbour upsampling by (s, t): y[:, i, j] = x[:, i // s, j // t]. Each input entry is copied to an
    s×t block, so its gradient is the sum of dout over that block."""

    def __init__(self, size):
        self.size = tuple(size)

    def forward(self, x):
        s, t = self.size
        return ops.repeat(ops.repeat(x, s, axis=1), t, axis=2)

    def backward(self, dout):
        (s, t), (_, h, w, c) = self.size, dout.shape
        return ops.sum(ops.reshape(dout, (-1, h // s, s, w // t, t, c)), axis=(2, 4))


class Cropping2D(Step):
    """Rows and columns cut off: ((top, bottom), (left, right)); the backward pads the gradient back with zeros."""

    def __init__(self, cropping):
        self.cropping = cropping

    def forward(self, x):
        (top, bottom), (left, right) = self.cropping
        return x[:, top:x.shape[1] - bottom, left:x.shape[2] - right, :]

    def backward(self, dout):
        (top, bottom), (left, right) = self.cropping
        return ops.pad(dout, [[0, 0], [top, bottom], [left, right], [0, 0]])


class Concatenate(Step):
    """y = [x_1, x_2, ...] along `axis`; the backward splits dout at the same boundaries."""

    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, xs):
        self.sizes = [x.shape[self.axis] for x in xs]
        return ops.concatenate(xs, axis=self.axis)

    def backward(self, dout):
        return ops.split(dout, list(np.cumsum(self.sizes)[:-1]), axis=self.axis)
