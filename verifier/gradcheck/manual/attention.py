"""Manual multi-head attention: Keras's MultiHeadAttention on sequences, its `forward` next to its `backward`.
Protocol in manual/layers.py.

Shapes (Keras's names): query x_q (B, T, d_q), value x_v (B, S, d_v), key x_k (B, S, d_k) (the value when not given);
N heads of size H (key_dim) and H_v (value_dim). Each projection is an EinsumDense with kernel (d, N, H) and bias
(N, H); the output projection's kernel is (N, H_v, d_out), its bias (d_out). The four projections name their
weights alike (kernel, bias), so the step reads them as "query/kernel", ..., "attention_output/bias"
(manual/table.py's `weights_by_name`).
"""
from keras import ops

from gradcheck.manual.layers import Softmax
from gradcheck.manual.step import Step

PROJECTIONS = ("query", "key", "value", "attention_output")  # the sublayers' names, as Keras names them
ROLES = ("query", "value", "key")  # the call's arguments, in Keras's order: layer(query, value, key=None)
LARGE_NEGATIVE = -1e9  # Keras's masked softmax adds (1 − mask)·(−1e9): exp underflows to exactly 0


class _Projection(Step):
    """Keras's EinsumDense as the attention uses it, z = einsum(x, W) + b, W contracted with x's feature axes and b
    broadcast over the batch and steps (b, t): dW = einsum(x, dz) summed over (b, t), db = Σ_{b,t} dz, and
    dx = einsum(dz, W) summed over W's other axes. Subscripts: the query, key and value map "btd" by "dnh" to
    "btnh"; the output maps "btnh" by "nhe" to "bte"."""

    def __init__(self, x: str, kernel: str, z: str):
        self.x_axes, self.kernel_axes, self.z_axes = x, kernel, z

    def forward(self, x, kernel, bias=None):
        self.x, self.W, self.has_bias = x, kernel, bias is not None
        z = ops.einsum(f"{self.x_axes},{self.kernel_axes}->{self.z_axes}", x, kernel)
        return z if bias is None else z + bias

    def backward(self, dz):
        self.grads = {"kernel": ops.einsum(f"{self.x_axes},{self.z_axes}->{self.kernel_axes}", self.x, dz)}
        if self.has_bias:
            self.grads["bias"] = ops.sum(dz, axis=(0, 1))
        return ops.einsum(f"{self.z_axes},{self.kernel_axes}->{self.x_axes}", dz, self.W)


class MultiHeadAttention(Step):
    """Per head: Q = x_q·W_q + b_q, K = x_k·W_k + b_k, V = x_v·W_v + b_v; scores S = (Q/√H)·Kᵀ (B, N, T, S), with
    use_causal_mask −∞ where s > t; P = softmax over s; A = P·V (B, T, N, H_v); y = Σ_{n,h} A·W_o + b_o.
    Backward, from y: dA = dy·W_oᵀ (and W_o's gradient); dP = dA·Vᵀ and dV = Pᵀ·dA; dS = P ⊙ (dP − Σ_s P ⊙ dP), the
    softmax's Jacobian–vector product (a masked entry has P = 0, so it gets no gradient); dQ = dS·K/√H and
    dK = dSᵀ·Q/√H; each projection then as a Dense. Self-attention (query and value one tensor) reads x twice: the
    twin sums the two gradients, as at any fork; without a key, the value's input also gets the key's gradient."""

    weights = tuple(f"{projection}/{name}" for projection in PROJECTIONS for name in ("kernel", "bias"))

    def __init__(self, key_dim: int, causal: bool = False, roles: tuple = ("query", "value")):
        self.scale, self.causal = 1.0 / key_dim ** 0.5, causal
        self.roles = roles  # of the inputs, in the order they come (query and value by keyword come sorted)
        self.projections = {name: _Projection("btd", "dnh", "btnh") for name in PROJECTIONS[:3]} | {
            PROJECTIONS[3]: _Projection("btnh", "nhe", "bte")}
        self.softmax = Softmax(axis=-1)

    def _project(self, name, x, weights):
        return self.projections[name].forward(x, **{w: weights[f"{name}/{w}"] for w in ("kernel", "bias")
                                                     if f"{name}/{w}" in weights})

    def forward(self, xs, **weights):
        given = dict(zip(self.roles, xs, strict=True))
        query, value = given["query"], given["value"]
        self.Q = self._project("query", query, weights) * ops.cast(self.scale, query.dtype)  # as Keras scales it
        self.K = self._project("key", given.get("key", value), weights)
        self.V = self._project("value", value, weights)
        scores = ops.einsum("bsnh,btnh->bnts", self.K, self.Q)
        if self.causal:  # position t attends to s <= t only
            allowed = ops.greater_equal(ops.arange(scores.shape[2])[:, None], ops.arange(scores.shape[3])[None, :])
            scores = ops.where(allowed, scores, ops.cast(LARGE_NEGATIVE, scores.dtype))
        self.P = self.softmax.forward(scores)
        return self._project("attention_output", ops.einsum("bnts,bsnh->btnh", self.P, self.V), weights)

    def backward(self, dout):
        d_attended = self.projections["attention_output"].backward(dout)
        dP = ops.einsum("btnh,bsnh->bnts", d_attended, self.V)
        dV = ops.einsum("bnts,btnh->bsnh", self.P, d_attended)
        dQ, dK = self._scores_backward(self.softmax.backward(dP))
        dx = {name: self.projections[name].backward(dz) for name, dz in (("query", dQ), ("key", dK), ("value", dV))}
        self.grads = {f"{name}/{w}": g for name, projection in self.projections.items()
                      for w, g in projection.grads.items()}
        return self._input_gradients(dx)

    def _scores_backward(self, d_scores):
        """S = (Q/√H)·Kᵀ: dQ = dS·K/√H, dK = dSᵀ·(Q/√H) (self.Q already carries 1/√H)."""
        dQ = ops.einsum("bnts,bsnh->btnh", d_scores, self.K) * ops.cast(self.scale, d_scores.dtype)
        return dQ, ops.einsum("bnts,btnh->bsnh", d_scores, self.Q)

    def _input_gradients(self, dx):
        """One per input, in the order they came; without a key the key was the value, so the value's input gets
        both gradients."""
        if "key" not in self.roles:
            dx = {**dx, "value": dx["value"] + dx["key"]}
        return [dx[role] for role in self.roles]
