"""Manual convolution and pooling (NHWC), each `forward` next to its `backward`; protocol in manual/layers.py.

"same" padding is made explicit, as TensorFlow and Keras compute it: the output has ⌈H/s⌉ rows,
and the P = max((⌈H/s⌉ − 1)·s + k_eff − H, 0) padded rows go ⌊P/2⌋ above and the rest below, with
k_eff = (k − 1)·d + 1 for dilation d. Every layer pads first and then works on a "valid" window grid,
so one backward serves both paddings (its gradient is cropped back to the unpadded input).
"""
import time

import numpy as np
from keras import ops

from gradcheck.manual.step import Step


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    effective = (kernel - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _paddings(padding: str, shape, kernel, strides, dilation=(1, 1)) -> list[tuple[int, int]]:
    if padding == "valid":
        return [(0, 0), (0, 0)]
    return [same_padding(shape[1 + k], kernel[k], strides[k], dilation[k]) for k in range(2)]


def _pad(x, pads, value=0.0):
    return ops.pad(x, [[0, 0], list(pads[0]), list(pads[1]), [0, 0]], constant_values=value)


def _crop(x, pads, h, w):
    return x[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + w, :]


def _spread(t, strides):
    """t[:, i, j] moved to [:, i·s_h, j·s_w], zeros in between: (N, (h − 1)·s_h + 1, (w − 1)·s_w + 1, C)."""
    for axis, s in ((1, strides[0]), (2, strides[1])):
        if s > 1:
            size = t.shape[axis]
            interleaved = ops.stack([t] + [ops.zeros_like(t)] * (s - 1), axis=axis + 1)
            shape = [-1, *t.shape[1:]]
            shape[axis] = size * s
            t = ops.reshape(interleaved, shape)
            t = t[:, :(size - 1) * s + 1] if axis == 1 else t[:, :, :(size - 1) * s + 1]
    return t


def _window_entries(xp, pool, strides):
    """For each window position (a, b), row-major: xp[:, a + i·s_h, b + j·s_w] over the output grid (i, j)."""
    ho = (xp.shape[1] - pool[0]) // strides[0] + 1
    wo = (xp.shape[2] - pool[1]) // strides[1] + 1
    return [((a, b), xp[:, a:a + (ho - 1) * strides[0] + 1:strides[0], b:b + (wo - 1) * strides[1] + 1:strides[1]])
            for a in range(pool[0]) for b in range(pool[1])]


def _route_back(routed, strides, padded_shape):
    """Σ over window positions (a, b) of each routed (N, ho, wo, C) gradient put back at a + i·s, b + j·s."""
    total = 0
    for (a, b), grad in routed:
        spread = _spread(grad, strides)
        total = total + ops.pad(spread, [[0, 0], [a, padded_shape[1] - a - spread.shape[1]],
                                         [b, padded_shape[2] - b - spread.shape[2]], [0, 0]])
    return total


def kernel_gradient_by_window_products(xp, dout, kernel_size, strides, dilation):
    """dL/dK[a,b,c,o] = Σ_{n,i,j} xp[n, i·s + a·d, j·s + b·d, c]·dout[n,i,j,o]: for each kernel entry (a, b), the
    input entries it met, as an (N·h·w, C) matrix, transposed times dout as an (N·h·w, O) matrix."""
    (sh, sw), (dh, dw), (_, h, w, out_channels) = strides, dilation, dout.shape
    flat_dout = ops.reshape(dout, (-1, out_channels))
    return ops.stack([ops.stack([
        ops.matmul(ops.transpose(ops.reshape(
            xp[:, a * dh:a * dh + (h - 1) * sh + 1:sh, b * dw:b * dw + (w - 1) * sw + 1:sw, :], (-1, xp.shape[3]))),
            flat_dout)
        for b in range(kernel_size[1])]) for a in range(kernel_size[0])])


def kernel_gradient_by_batch_as_channels(xp, dout, kernel_size, strides, dilation):
    """The same sum with the batch axis as the channels: a valid convolution of xp as (C, H, W, N) with dout as an
    (h, w, N, O) kernel dilated by s, stepping by d, gives (C, ≥k_h, ≥k_w, O)."""
    dK = ops.conv(ops.transpose(xp, (3, 1, 2, 0)), ops.transpose(dout, (1, 2, 0, 3)),
                  strides=dilation, padding="valid", dilation_rate=strides)
    return ops.transpose(dK[:, :kernel_size[0], :kernel_size[1], :], (1, 2, 0, 3))


def kernel_gradient_by_shifted_rows(xp, dout, kernel_size, strides, dilation):
    """Stride 1 only. The same sum over the flattened pixel axis p = row·W + column: entry (a, b) pairs dout's
    pixel p with xp's pixel p + a·d·W + b·d. With the batch moved inside each pixel, (H·W, N, C), xp's pixels
    for one entry are one contiguous run, a slice along the first axis, which TensorFlow hands over without a
    copy; dout is padded to xp's width W (its zeros meet the columns where the shifted run wraps to a new row)
    and cut to the (h − 1)·W + w pixels that the last window row ends on, so no run passes xp's end."""
    if tuple(strides) != (1, 1):
        raise ValueError(f"the shifted-rows kernel gradient needs stride 1, not {tuple(strides)}")
    (_, height, width, channels), (_, h, w, out_channels) = xp.shape, dout.shape
    pixels = (h - 1) * width + w
    by_pixel = ops.reshape(ops.transpose(xp, (1, 2, 0, 3)), (height * width, -1, channels))
    flat_dout = ops.reshape(ops.transpose(ops.pad(dout, [[0, 0], [0, 0], [0, width - w], [0, 0]]), (1, 2, 0, 3)),
                            (h * width, -1, out_channels))
    flat_dout = ops.reshape(flat_dout[:pixels], (-1, out_channels))
    return ops.stack([ops.stack([
        ops.matmul(ops.transpose(ops.reshape(by_pixel[shift:shift + pixels], (-1, channels))), flat_dout)
        for shift in (a * dilation[0] * width + b * dilation[1] for b in range(kernel_size[1]))])
        for a in range(kernel_size[0])])


# Formulations of the kernel gradient; which is faster depends on the CPU and the shapes (docs/benchmarks.md and
# results/manual_layer_profile.json give measured times). Conv2D.choose_fastest times those that apply to the layer;
# the first is the default.
KERNEL_GRADIENTS = {"window_products": kernel_gradient_by_window_products,
                    "batch_as_channels": kernel_gradient_by_batch_as_channels,
                    "shifted_rows": kernel_gradient_by_shifted_rows}
UNIT_STRIDE_ONLY = {"shifted_rows"}


def kernel_gradients_for(strides) -> list[str]:
    """The KERNEL_GRADIENTS formulations that apply to a convolution with these strides."""
    return [name for name in KERNEL_GRADIENTS if tuple(strides) == (1, 1) or name not in UNIT_STRIDE_ONLY]


class _Convolution(Step):
    """A kernel slid over the explicitly padded input xp with stride s and dilation d (Keras allows one of them > 1)."""
    weights = ("kernel", "bias")

    def __init__(self, strides=(1, 1), padding="valid", dilation=(1, 1)):
        self.strides, self.padding, self.dilation = tuple(strides), padding, tuple(dilation)

    def _pad_for(self, x, kernel, bias):
        """xp, kept with what the backward needs: the padding, the input's size, the kernel, whether there is a bias."""
        self.pads = _paddings(self.padding, x.shape, kernel.shape[:2], self.strides, self.dilation)
        self.h, self.w, self.K, self.has_bias = x.shape[1], x.shape[2], kernel, bias is not None
        self.xp = _pad(x, self.pads)
        return self.xp


class Conv2D(_Convolution):
    """Cross-correlation y[n,i,j,o] = Σ_{a,b,c} xp[n, i·s + a·d, j·s + b·d, c]·K[a,b,c,o] + b[o],
    xp the padded input; any stride s or dilation d (Keras allows one of them > 1), valid or same."""
    kernel_gradient = "window_products"  # a key of KERNEL_GRADIENTS; choose_fastest sets it per layer

    def forward(self, x, kernel, bias=None):
        y = ops.conv(self._pad_for(x, kernel, bias), kernel, strides=self.strides, padding="valid",
                     dilation_rate=self.dilation)
        self.y_shape = y.shape
        # The bias as (1, 1, 1, O), as Keras adds it: TensorFlow's graph optimizer then fuses the add (and a ReLU
        # after it) into the convolution; added as (O,) it stays a separate broadcast add.
        return y if bias is None else y + ops.reshape(bias, (1, 1, 1, -1))

    def backward(self, dout):
        dh, dw = self.dilation
        kh, kw = self.K.shape[:2]
        self.grads = {"kernel": KERNEL_GRADIENTS[self.kernel_gradient](self.xp, dout, (kh, kw), self.strides,
                                                                       self.dilation)}
        if self.has_bias:
            self.grads["bias"] = ops.sum(dout, axis=(0, 1, 2))
        # dL/dxp = full convolution of dout with K: spread dout back to stride 1 (zeros between), pad by k_eff − 1
        # (plus the rows and columns the stride never reached), correlate with K rotated 180°, dilated by d,
        # with its channel axes swapped (c_out → c_in).
        eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
        spread = _spread(dout, self.strides)
        hp, wp = self.xp.shape[1], self.xp.shape[2]
        padded = ops.pad(spread, [[0, 0], [eh - 1, hp - spread.shape[1]], [ew - 1, wp - spread.shape[2]], [0, 0]])
        rotated = ops.transpose(ops.flip(self.K, axis=(0, 1)), (0, 1, 3, 2))
        dxp = ops.conv(padded, rotated, strides=1, padding="valid", dilation_rate=self.dilation)
        return _crop(dxp, self.pads, self.h, self.w)

    def choose_fastest(self, compile=None, repeats: int = 5) -> dict[str, float]:
        """Time each kernel-gradient formulation that applies to this layer's strides on random tensors of the shapes
        of the last forward, each compiled by `compile` (a function → function, as the step will run it: eager
        timings mislead, the window products being many small ops), alternating, best of `repeats` after a warm-up;
        keep the fastest for this layer. Returns {formulation: seconds}."""
        kernel_size = tuple(self.K.shape[:2])
        rng = np.random.default_rng(0)
        xp, dout = (ops.convert_to_tensor(rng.standard_normal(shape), self.xp.dtype)
                    for shape in (self.xp.shape, self.y_shape))
        runs = {name: (compile or (lambda f: f))(
                    lambda xp, dout, f=KERNEL_GRADIENTS[name]: f(xp, dout, kernel_size, self.strides, self.dilation))
                for name in kernel_gradients_for(self.strides)}
        seconds = dict.fromkeys(runs, float("inf"))
        for round_number in range(repeats + 1):  # round 0 compiles and warms up
            for name, run in runs.items():
                start = time.perf_counter()
                ops.convert_to_numpy(run(xp, dout))
                if round_number:
                    seconds[name] = min(seconds[name], time.perf_counter() - start)
        self.kernel_gradient = min(seconds, key=seconds.get)
        return seconds


class GroupedConv2D(_Convolution):
    """Conv2D(groups=G): input channels and filters in G contiguous groups, group g's filters convolving only group
    g's channels (Keras's kernel is (kh, kw, C/G, O)). Each group is a Conv2D of its own, forward and backward; the
    kernel's gradient is theirs side by side along the filters, the input's along the channels."""

    def __init__(self, groups: int, strides=(1, 1), padding="valid", dilation=(1, 1)):
        super().__init__(strides, padding, dilation)
        self.groups = [Conv2D(strides, padding, dilation) for _ in range(groups)]

    def forward(self, x, kernel, bias=None):
        inputs, kernels = (ops.split(tensor, len(self.groups), axis=-1) for tensor in (x, kernel))
        y = ops.concatenate([group.forward(x_g, k_g) for group, x_g, k_g in zip(self.groups, inputs, kernels,
                                                                                  strict=True)], axis=-1)
        self.has_bias = bias is not None
        return y if bias is None else y + ops.reshape(bias, (1, 1, 1, -1))

    def backward(self, dout):
        douts = ops.split(dout, len(self.groups), axis=-1)
        dx = ops.concatenate([group.backward(d) for group, d in zip(self.groups, douts, strict=True)], axis=-1)
        self.grads = {"kernel": ops.concatenate([group.grads["kernel"] for group in self.groups], axis=-1)}
        if self.has_bias:
            self.grads["bias"] = ops.sum(dout, axis=(0, 1, 2))
        return dx


class DepthwiseConv2D(_Convolution):
    """Each input channel c convolved with its own m kernels: y[n,i,j,c·m + k] = Σ_{a,b} xp[n, i·s + a·d, j·s + b·d, c]
    ·K[a,b,c,k] + b[c·m + k]. For each kernel entry (a, b), W_ab = the input entries it met (N, h, w, C), as a pool
    window's entries: dL/dK[a,b,c,k] = Σ_{n,i,j} W_ab[..., c]·dout[..., c, k] (no sum over channels, unlike Conv2D's
    xᵀ·dout), and W_ab's entries get Σ_k dout[..., c, k]·K[a,b,c,k], routed back as a pool's gradient is."""

    def forward(self, x, kernel, bias=None):
        y = ops.depthwise_conv(self._pad_for(x, kernel, bias), kernel, strides=self.strides, padding="valid",
                               dilation_rate=self.dilation)
        return y if bias is None else y + ops.reshape(bias, (1, 1, 1, -1))

    def backward(self, dout):
        (kh, kw, channels, multiplier), (sh, sw), (dh, dw) = self.K.shape, self.strides, self.dilation
        _, h, w, _ = dout.shape
        per_kernel = ops.reshape(dout, (-1, h, w, channels, multiplier))  # output channel c·m + k → (c, k)
        entries = {(a, b): self.xp[:, a * dh:a * dh + (h - 1) * sh + 1:sh, b * dw:b * dw + (w - 1) * sw + 1:sw, :]
                   for a in range(kh) for b in range(kw)}
        self.grads = {"kernel": ops.stack([ops.stack([
            ops.sum(entries[a, b][..., None] * per_kernel, axis=(0, 1, 2)) for b in range(kw)]) for a in range(kh)])}
        if self.has_bias:
            self.grads["bias"] = ops.sum(dout, axis=(0, 1, 2))
        routed = [((a * dh, b * dw), ops.sum(per_kernel * self.K[a, b], axis=-1)) for a, b in entries]
        return _crop(_route_back(routed, self.strides, self.xp.shape), self.pads, self.h, self.w)


class Renamed(Step):
    """A step reading the layer's weights under other names (SeparableConv2D's depthwise_kernel is a DepthwiseConv2D's
    kernel, its pointwise_kernel and bias a 1×1 Conv2D's): `names` {Keras name: the step's name} lists all it reads."""

    def __init__(self, step, names: dict):
        self.step, self.names, self.weights = step, names, tuple(names)

    def forward(self, x, **weights):
        return self.step.forward(x, **{self.names[name]: value for name, value in weights.items()})

    def backward(self, dout):
        dx = self.step.backward(dout)
        keras_name = {step_name: name for name, step_name in self.names.items()}
        self.grads = {keras_name[name]: grad for name, grad in self.step.grads.items()}
        return dx


class Conv2DTranspose(Step):
    """y = Cᵀ(x) + b: the transpose (adjoint) of the convolution C(u) = conv(u, K) with the layer's stride and padding,
    mapping the larger output back to x's size (Keras's kernel (kh, kw, c_out, c_in) is C's kernel as it is). Since
    ⟨dout, Cᵀ_K(x)⟩ = ⟨C_K(dout), x⟩, the backward is the convolution's own formulas: dL/dx = C(dout), C's forward,
    and dL/dK is C's kernel gradient at input dout with output gradient x."""
    weights = ("kernel", "bias")

    def __init__(self, strides=(1, 1), padding="valid"):
        self.strides, self.padding = tuple(strides), padding
        self.adjoint = Conv2D(strides, padding)

    def forward(self, x, kernel, bias=None):
        self.x, self.K, self.has_bias = x, kernel, bias is not None
        y = ops.conv_transpose(x, kernel, strides=self.strides, padding=self.padding)
        return y if bias is None else y + ops.reshape(bias, (1, 1, 1, -1))

    def backward(self, dout):
        dx = self.adjoint.forward(dout, self.K)
        self.adjoint.backward(self.x)  # its kernel gradient; its input gradient (w.r.t. dout) is not needed
        self.grads = {"kernel": self.adjoint.grads["kernel"]}
        if self.has_bias:
            self.grads["bias"] = ops.sum(dout, axis=(0, 1, 2))
        return dx


class _Pooling(Step):
    """A pool window slid over the padded input: its entries forward, each output's gradient routed back."""

    def __init__(self, pool=(2, 2), strides=None, padding="valid"):
        self.pool, self.strides, self.padding = tuple(pool), tuple(strides or pool), padding

    def _windows(self, x, fill: float = 0.0) -> list:
        """(window position, its entries over the output grid), after padding x with `fill`."""
        self.pads = _paddings(self.padding, x.shape, self.pool, self.strides)
        self.h, self.w = x.shape[1], x.shape[2]
        xp = _pad(x, self.pads, fill)
        self.padded_shape = xp.shape
        return _window_entries(xp, self.pool, self.strides)

    def _routed_back(self, routed) -> object:
        """dL/dx from each window position's share of dout: summed where windows overlap, padding cropped off."""
        return _crop(_route_back(routed, self.strides, self.padded_shape), self.pads, self.h, self.w)


class MaxPooling2D(_Pooling):
    """y = the maximum of each pool window (any pool, stride and padding; "same" pads with −∞).

    Two formulations of the same routing. Windows that tile the input (valid padding, stride = pool: the usual
    2×2 pool) are a 6-D view of it, (N, H/p_h, p_h, W/p_w, p_w, C), a reshape and no copy: y is the framework's
    max_pool, the first maximum of each window takes the gradient as a 0/1 factor, and the gradient returns
    through the same reshape. Any other pool (overlapping, strided, same-padded) routes window position by
    window position: a strided slice, a first-max mask and a padded copy each. The view is the faster on the CNN's
    2×2 pool, several times faster than window by window (results/manual_layer_profile.json)."""

    def forward(self, x):
        self.tiled = self.padding == "valid" and self.pool == self.strides
        if self.tiled:
            return self._tiled_forward(x)
        entries = self._windows(x, float("-inf"))
        y = entries[0][1]
        for _, entry in entries[1:]:
            y = ops.maximum(y, entry)
        # The arg-max of each window as one mask per window position. Ties: the first maximum in row-major
        # window order wins, as in TensorFlow's MaxPoolGrad.
        self.masks, taken = [], ops.zeros_like(y, dtype="bool")
        for position, entry in entries:
            mask = ops.logical_and(ops.equal(entry, y), ops.logical_not(taken))
            self.masks.append((position, mask))
            taken = ops.logical_or(taken, mask)
        return y

    def backward(self, dout):
        # The whole gradient of each output goes to its window's arg-max; overlapping windows add up.
        if self.tiled:
            return self._tiled_backward(dout)
        zero = ops.zeros_like(dout)
        return self._routed_back([(position, ops.where(mask, dout, zero)) for position, mask in self.masks])

    def _tiled_forward(self, x):
        (ph, pw), (_, h, w, c) = self.pool, x.shape
        self.h, self.w, ho, wo = h, w, h // ph, w // pw  # valid padding: rows and columns past the last window drop
        y = ops.max_pool(x, self.pool, self.pool)
        # Window (i, j)'s entry (a, b) is windows[:, i, a, j, b]: a reshape, no copy, and the gradient comes back
        # through the same reshape.
        windows = ops.reshape(x[:, :ho * ph, :wo * pw, :], (-1, ho, ph, wo, pw, c))
        is_max = ops.equal(windows, ops.reshape(y, (-1, ho, 1, wo, 1, c)))
        # Ties: the first maximum in row-major window order (a, then b) wins, as in TensorFlow's MaxPoolGrad.
        rows, taken = [], None
        for a in range(ph):
            row = []
            for b in range(pw):
                entry = is_max[:, :, a:a + 1, :, b:b + 1, :]
                row.append(entry if taken is None else ops.logical_and(entry, ops.logical_not(taken)))
                taken = row[-1] if taken is None else ops.logical_or(taken, row[-1])
            rows.append(ops.concatenate(row, axis=4))
        self.first_max = ops.cast(ops.concatenate(rows, axis=2), x.dtype)  # 1 at each window's first maximum, else 0
        return y

    def _tiled_backward(self, dout):
        (ph, pw), (_, ho, wo, c) = self.pool, dout.shape
        dx = ops.reshape(self.first_max * ops.reshape(dout, (-1, ho, 1, wo, 1, c)), (-1, ho * ph, wo * pw, c))
        return ops.pad(dx, [[0, 0], [0, self.h - ho * ph], [0, self.w - wo * pw], [0, 0]])


class AveragePooling2D(_Pooling):
    """y = the mean of each pool window; with "same" padding the padded entries are not counted (TensorFlow's rule)."""

    def forward(self, x):
        self.count = sum(entry for _, entry in self._windows(ops.ones_like(x[:1, :, :, :1])))  # entries per window
        return sum(entry for _, entry in self._windows(x)) / self.count

    def backward(self, dout):
        # Each window entry receives dout / (entries counted in that window); overlapping windows add up.
        share = dout / self.count
        return self._routed_back([((a, b), share) for a in range(self.pool[0]) for b in range(self.pool[1])])


class GlobalAveragePooling2D(Step):
    """y[n, c] = mean over (i, j) of x[n, i, j, c] (keepdims: shape (N, 1, 1, C))."""

    def __init__(self, keepdims=False):
        self.keepdims = keepdims

    def forward(self, x):
        self.shape = x.shape
        return ops.mean(x, axis=(1, 2), keepdims=self.keepdims)

    def backward(self, dout):
        _, h, w, c = self.shape
        dout = ops.reshape(dout, (-1, 1, 1, c))
        return ops.broadcast_to(dout / (h * w), (ops.shape(dout)[0], h, w, c))  # every entry gets 1/(H·W)


class GlobalAveragePooling1D(Step):
    """y[n, c] = Σ_t m[n, t]·x[n, t, c] / Σ_t m[n, t], the mean over the steps the Keras mask keeps (all of them
    without a mask; keepdims: shape (N, 1, C)). dL/dx[n, t, c] = m[n, t]·dout[n, c] / Σ_t m[n, t]: each kept step's
    share. The output has no mask (the steps are gone)."""
    follows_masks = True

    def __init__(self, keepdims=False):
        self.keepdims = keepdims

    def forward(self, x, mask=None):
        self.shape, self.output_mask = x.shape, None
        if mask is None:
            self.share = 1 / x.shape[1]
            return ops.mean(x, axis=1, keepdims=self.keepdims)
        keep = ops.expand_dims(ops.cast(mask, "bool"), -1)  # (N, T, 1)
        count = ops.sum(ops.cast(keep, x.dtype), axis=1, keepdims=True)  # kept steps per sequence (N, 1, 1)
        self.share = ops.where(keep, 1 / count, ops.zeros_like(count))
        y = ops.sum(ops.where(keep, x, ops.zeros_like(x)), axis=1, keepdims=True) / count
        return y if self.keepdims else ops.squeeze(y, axis=1)

    def backward(self, dout):
        n, t, c = ops.shape(dout)[0], self.shape[1], self.shape[2]
        return ops.broadcast_to(ops.reshape(dout, (-1, 1, c)) * self.share, (n, t, c))


class GlobalMaxPooling2D(Step):
    """y[n, c] = max over (i, j) of x[n, i, j, c] (keepdims: shape (N, 1, 1, C))."""

    def __init__(self, keepdims=False):
        self.keepdims = keepdims

    def forward(self, x):
        y = ops.max(x, axis=(1, 2), keepdims=True)
        # Ties share the gradient equally: the rule of TensorFlow's reduce_max gradient (and of JAX's and PyTorch's).
        hits = ops.cast(ops.equal(x, y), x.dtype)
        self.share = hits / ops.sum(hits, axis=(1, 2), keepdims=True)
        return y if self.keepdims else ops.squeeze(y, axis=(1, 2))

    def backward(self, dout):
        return ops.reshape(dout, (-1, 1, 1, self.share.shape[-1])) * self.share


class OnARow(Step):
    """A 1-D layer (Conv1D, MaxPooling1D, GlobalMaxPooling1D, ...) as its 2-D formula on images one row high:
    a sequence (N, L, C) is the image (N, 1, L, C) and a kernel (k, c_in, c_out) the kernel (1, k, c_in, c_out), which
    is how TensorFlow itself computes a 1-D convolution; the backward drops the row again."""

    def __init__(self, step):
        self.step, self.weights = step, step.weights

    def forward(self, x, **weights):
        weights = {name: ops.expand_dims(w, 0) if name == "kernel" else w for name, w in weights.items()}
        y = self.step.forward(ops.expand_dims(x, 1), **weights)
        self.rows = len(y.shape) == 4  # a global pooling without keepdims returns (N, C): no row to drop
        return ops.squeeze(y, 1) if self.rows else y

    def choose_fastest(self, compile=None) -> dict[str, float]:
        return self.step.choose_fastest(compile)

    def backward(self, dout):
        dx = self.step.backward(ops.expand_dims(dout, 1) if self.rows else dout)
        self.grads = {name: ops.squeeze(g, 0) if name == "kernel" else g
                      for name, g in self.step.grads.items()}
        return ops.squeeze(dx, 1)
