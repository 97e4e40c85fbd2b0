"""Manual layers: `forward` keeps what `backward` needs; `backward(dout)` returns dx and sets grads.

Conventions (Keras's, so that weights copy straight from `layer.get_weights()`): NHWC tensors, conv
kernels (kh, kw, c_in, c_out), Dense W as (in, out), inverted dropout (kept units scaled by
1/(1 − rate)), losses averaged over the batch. Only forward TensorFlow ops are used (matmul,
conv2d, reshape, ...): never a tape, tf.gradients or a *Grad / conv2d_backprop_* kernel, which
would check TensorFlow against itself. `dout` is never modified in place.
"""
import tensorflow as tf


class Affine:
    """y = x·W + b (Keras Dense without its activation)."""

    def __init__(self, name: str, W: tf.Tensor, b: tf.Tensor):
        self.name, self.W, self.b = name, W, b

    def set_parameters(self, kernel, bias):
        self.W, self.b = kernel, bias

    def forward(self, x):
        self.x = x
        return tf.matmul(x, self.W) + self.b

    def backward(self, dout):
        # dL/dW = xᵀ·dout, dL/db = Σ_n dout, dL/dx = dout·Wᵀ  (C002-4; C002-3 entrywise)
        self.grads = {"kernel": tf.matmul(self.x, dout, transpose_a=True), "bias": tf.reduce_sum(dout, axis=0)}
        return tf.matmul(dout, self.W, transpose_b=True)


class ReLU:
    def forward(self, x):
        self.mask = x > 0
        return tf.where(self.mask, x, tf.zeros_like(x))

    def backward(self, dout):
        # Gradient passes where x > 0 (C002-3). At exactly x = 0 it is 0: the book's `x <= 0`
        # zeroing, which TensorFlow's ReluGrad follows; the slide's `x < 0` would pass it (C002-4).
        return tf.where(self.mask, dout, tf.zeros_like(dout))


class Sigmoid:
    def forward(self, x):
        self.y = tf.sigmoid(x)
        return self.y

    def backward(self, dout):
        return dout * self.y * (1 - self.y)  # σ′ = y(1 − y)  (C004-4)


class Tanh:
    def forward(self, x):
        self.y = tf.tanh(x)
        return self.y

    def backward(self, dout):
        return dout * (1 - self.y**2)  # tanh′ = 1 − y²


class Identity:
    def forward(self, x):
        return x

    def backward(self, dout):
        return dout


class Dropout:
    """Inverted dropout with a given 0/1 mask (None: inference, the identity)."""

    def __init__(self, name: str, rate: float):
        self.name, self.rate = name, rate

    def forward(self, x, mask=None):
        self.scale = None if mask is None else tf.cast(mask, x.dtype) / (1 - self.rate)
        return x if self.scale is None else x * self.scale

    def backward(self, dout):
        return dout if self.scale is None else dout * self.scale  # the forward's mask, reused


class Flatten:
    def forward(self, x):
        self.shape = tf.shape(x)
        return tf.reshape(x, (self.shape[0], -1))

    def backward(self, dout):
        return tf.reshape(dout, self.shape)


class MaxPool2D:
    """Non-overlapping p×p max pooling (stride p, valid padding: leftover rows/columns dropped)."""

    def __init__(self, pool: int):
        self.p = pool

    def forward(self, x):
        n, h, w, c = x.shape
        p, ho, wo = self.p, h // self.p, w // self.p
        self.in_shape = (n, h, w, c)
        # space_to_depth lays each window out along the channels, position k = a·p + b (row-major) in
        # channels [k·c, (k + 1)·c): the windows' entries as p² tensors of the output's shape.
        windows = tf.nn.space_to_depth(x[:, :ho * p, :wo * p, :], p)
        entries = [windows[..., k * c:(k + 1) * c] for k in range(p * p)]
        y = entries[0]
        for entry in entries[1:]:
            y = tf.maximum(y, entry)
        # The arg-max of each window as one mask per position. Ties: the first maximum in row-major
        # window order wins, as in TF's MaxPoolGrad.
        self.masks, taken = [], tf.zeros_like(y, tf.bool)
        for entry in entries:
            mask = tf.logical_and(tf.equal(entry, y), tf.logical_not(taken))
            self.masks.append(mask)
            taken = tf.logical_or(taken, mask)
        return y

    @property
    def argmax(self):
        """The window position k = a·p + b of each output's maximum."""
        return tf.add_n([k * tf.cast(mask, tf.int64) for k, mask in enumerate(self.masks)])

    def backward(self, dout):
        # The whole gradient goes to the arg-max of each window; the other inputs get 0.
        n, h, w, c = self.in_shape
        p, ho, wo = self.p, h // self.p, w // self.p
        zero = tf.zeros_like(dout)
        routed = tf.nn.depth_to_space(tf.concat([tf.where(mask, dout, zero) for mask in self.masks], axis=-1), p)
        return tf.pad(routed, [[0, 0], [0, h - ho * p], [0, w - wo * p], [0, 0]])


class Conv2D:
    """Valid, stride-1 cross-correlation y[n,i,j,o] = Σ_{a,b,c} x[n,i+a,j+b,c]·K[a,b,c,o] + b[o]."""

    def __init__(self, name: str, K: tf.Tensor, b: tf.Tensor):
        self.name, self.K, self.b = name, K, b

    def set_parameters(self, kernel, bias):
        self.K, self.b = kernel, bias

    def forward(self, x):
        self.x = x
        return tf.nn.conv2d(x, self.K, strides=1, padding="VALID") + self.b

    def backward(self, dout):
        kh, kw, c_in, c_out = self.K.shape
        # dL/dK[a,b,c,o] = Σ_{n,i,j} x[n,i+a,j+b,c]·dout[n,i,j,o]: the input correlated with dout. That is
        # itself a valid convolution once the batch axis plays the channels: x as (c, H, W, n) correlated
        # with dout as a (h, w, n, o) kernel gives (c, kh, kw, o). (4× faster here than correlating
        # extracted patches, and faster than TF's own Conv2DBackpropFilter on 2 CPU cores.)
        dK = tf.nn.conv2d(tf.transpose(self.x, (3, 1, 2, 0)), tf.transpose(dout, (1, 2, 0, 3)), strides=1,
                          padding="VALID")
        self.grads = {"kernel": tf.transpose(dK, (1, 2, 0, 3)), "bias": tf.reduce_sum(dout, axis=(0, 1, 2))}
        # dL/dx = full convolution of dout with K: pad by (k − 1), correlate with K rotated 180°
        # and with its channel axes swapped (c_out → c_in).
        padded = tf.pad(dout, [[0, 0], [kh - 1, kh - 1], [kw - 1, kw - 1], [0, 0]])
        rotated = tf.transpose(self.K[::-1, ::-1, :, :], (0, 1, 3, 2))
        return tf.nn.conv2d(padded, rotated, strides=1, padding="VALID")


class SoftmaxCrossEntropy:
    """L = −(1/N) Σ_n Σ_k t log y, y = softmax(u) per row; computed from the logits u, stably."""

    def forward(self, u, t):
        self.t, self.n = t, tf.cast(tf.shape(u)[0], u.dtype)
        log_y = u - tf.reduce_logsumexp(u, axis=-1, keepdims=True)  # log-softmax without overflow
        self.y = tf.exp(log_y)
        return -tf.reduce_sum(t * log_y) / self.n

    def backward(self):
        return (self.y - self.t) / self.n  # δ = (y − t)/N  (C004-3, C002-4; uses Σ_k t_k = 1)


class SigmoidBinaryCrossEntropy:
    """L = mean over batch and units of −t log y − (1 − t) log(1 − y), y = σ(u); computed from u."""

    def forward(self, u, t):
        self.t, self.count = t, tf.cast(tf.size(u), u.dtype)
        self.y = tf.sigmoid(u)
        # −t log σ(u) − (1 − t) log(1 − σ(u)) = softplus(u) − t·u, which never takes log(0).
        return tf.reduce_sum(tf.nn.softplus(u) - t * u) / self.count

    def backward(self):
        return (self.y - self.t) / self.count  # δ = y − t, averaged  (C004-2, C003-2)


class IdentityHalfSquaredError:
    """E = (1/N) Σ_n ½ Σ_k (u − t)² with the identity output y = u (the note's E for N = 1)."""

    def forward(self, u, t):
        self.y, self.t, self.n = u, t, tf.cast(tf.shape(u)[0], u.dtype)
        return 0.5 * tf.reduce_sum((u - t) ** 2) / self.n

    def backward(self):
        return (self.y - self.t) / self.n  # δ = y − d  (C004-1, C000-1)
