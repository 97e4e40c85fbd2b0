"""Manual recurrent layers: backpropagation through time (BPTT), each `forward` next to its `backward`.

The forward unrolls the cell over the T steps of a sequence (N, T, D), from a zero state, keeping each step's
inputs and activations; the backward walks the steps in reverse, and the gradient reaching a step's state is the
sum of what its output receives (with return_sequences) and what the next step sends back through the recurrent
kernel: the chain rule's sum over paths, over time. A weight's gradient is the sum of its gradients at every step
(the weights are shared across time, as a layer called twice shares them). Protocol in manual/layers.py.
Keras's conventions: kernel (D, k·u) and recurrent_kernel (u, k·u) hold the k gates side by side (LSTM: i, f, c, o);
go_backwards processes the steps last to first and returns the outputs in that order.
States: an `initial_state` (h_0, and c_0 for an LSTM) comes in after the sequence, as Keras's node lists it, and its
gradient is what reaches h_0 (c_0) at the end of the backward walk; with `return_state` the layer also outputs its
last state(s), and their gradients start the walk at the last step, added to what its output receives.
A Keras mask (N, T) (from Embedding(mask_zero=True) or Masking) skips steps: at a masked step the layer keeps its
previous state, h_t = m_t·h̃_t + (1 − m_t)·h_{t−1} (Keras's `where`), and outputs it (zeros instead where
zero_output_for_mask, which a Bidirectional sets with return_sequences). Backward splits the gradient at h_t the same
way: m_t·dh_t goes through the cell, (1 − m_t)·dh_t straight to h_{t−1}.
"""
from keras import ops

from gradcheck.manual.step import Step


def _sum(a, b):
    """a + b, where None is a gradient that does not arrive (the last step has no successor)."""
    return b if a is None else a if b is None else a + b


class _Recurrent(Step):
    weights = ("kernel", "recurrent_kernel", "bias")
    follows_masks = True  # forward takes the Keras mask and sets output_mask (manual/layers.py)

    def __init__(self, return_sequences: bool, go_backwards: bool, zero_output_for_mask: bool = False,
                 return_state: bool = False):
        self.return_sequences, self.go_backwards = return_sequences, go_backwards
        self.zero_output_for_mask, self.return_state = zero_output_for_mask, return_state

    def _sequence_and_states(self, inputs, count: int):
        """(x, the `count` initial states: given after the sequence, else zeros (N, u))."""
        x, *given = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        self.given_states = bool(given)
        units = self.U.shape[0]
        return x, given or [ops.zeros((x.shape[0], units), x.dtype) for _ in range(count)]

    def _with_states(self, output, states):
        """The layer's output, and with return_state its last states after it (Keras's [output, h_T, c_T])."""
        return [output, *states] if self.return_state else output

    def _douts(self, dout, count: int):
        """(the output's gradient, the last states' gradients): None where nothing arrives."""
        if not self.return_state:
            return dout, [None] * count
        return dout[0], list(dout[1:])

    def _input_gradients(self, dxs, state_gradients):
        """dx, and after it each initial state's gradient where the caller gave the states."""
        dx = self._input_gradient(dxs)
        return [dx, *state_gradients] if self.given_states else dx

    def _steps(self, x, mask=None):
        """The sequence's steps (N, D) in processing order; each step's keep (N, 1) (True where the Keras mask lets the
        step update the state; None without a mask), and the mask of the layer's output."""
        steps = [x[:, t, :] for t in range(x.shape[1])]
        keeps = [None] * len(steps) if mask is None else [ops.expand_dims(ops.cast(mask[:, t], "bool"), -1)
                                                          for t in range(len(steps))]
        self.keeps = keeps[::-1] if self.go_backwards else keeps
        self.output_mask = mask if self.return_sequences else None
        return steps[::-1] if self.go_backwards else steps

    def _kept(self, t, new, previous):
        """h_t = m_t·h̃_t + (1 − m_t)·h_{t−1}: a masked step keeps the previous state."""
        return new if self.keeps[t] is None else ops.where(self.keeps[t], new, previous)

    def _split(self, t, dh):
        """dL/dh_t split as _kept's adjoint: (m_t·dh into the step's new state, (1 − m_t)·dh straight to h_{t−1}, None
        without a mask)."""
        if self.keeps[t] is None or dh is None:
            return dh, None
        zero = ops.zeros_like(dh)
        return ops.where(self.keeps[t], dh, zero), ops.where(self.keeps[t], zero, dh)

    def _shown(self, t, h):
        """The output at step t: the state, or zeros at a masked step where zero_output_for_mask."""
        if self.keeps[t] is None or not self.zero_output_for_mask:
            return h
        return ops.where(self.keeps[t], h, ops.zeros_like(h))

    def _output(self, hs):
        shown = [self._shown(t, h) for t, h in enumerate(hs)]
        return ops.stack(shown, axis=1) if self.return_sequences else shown[-1]

    def _arriving(self, dout, count):
        """The gradient each step's output receives from the layer's output (None: nothing but the recurrence); the
        adjoint of _shown (a zeroed output passes nothing back)."""
        if dout is None:  # only the returned states reach the loss
            return [None] * count
        if self.return_sequences:
            return [self._shown(t, dout[:, t, :]) for t in range(count)]
        return [None] * (count - 1) + [self._shown(count - 1, dout)]

    def _input_gradient(self, dxs):
        return ops.stack(dxs[::-1] if self.go_backwards else dxs, axis=1)

    def _to_the_previous_state(self, dz):
        """dL/dh_{t−1} from step t: back through the recurrent kernel, z_t = ... + h_{t−1}·U."""
        return ops.matmul(dz, ops.transpose(self.U))

    def _weight_gradients(self, dzs, recurrent_dzs=None):
        """Σ_t x_tᵀ·dz_t and Σ_t h_{t−1}ᵀ·dz_t (each weight's gradient summed over the steps), and the bias's
        Σ_t Σ_n dz_t. recurrent_dzs: the gradient at h_{t−1}·U where it differs from that at x_t·W (a GRU's reset
        gate)."""
        recurrent_dzs = recurrent_dzs or dzs
        grads = {"kernel": sum(ops.matmul(ops.transpose(x), dz) for x, dz in zip(self.xs, dzs, strict=True)),
                 "recurrent_kernel": sum(ops.matmul(ops.transpose(h), dz)
                                         for h, dz in zip(self.h_prevs, recurrent_dzs, strict=True))}
        if self.has_bias:
            grads["bias"] = sum(ops.sum(dz, axis=0) for dz in dzs)
        return grads


class SimpleRNN(_Recurrent):
    """h_t = f(x_t·W + b + h_{t−1}·U), h_0 = 0. BPTT: dz_t = f′ ⊙ (dout_t + dz_{t+1}·Uᵀ); dL/dW = Σ_t x_tᵀ dz_t,
    dL/dU = Σ_t h_{t−1}ᵀ dz_t, dL/db = Σ_t Σ_n dz_t, dL/dx_t = dz_t·Wᵀ."""

    def __init__(self, activation, return_sequences=False, go_backwards=False, zero_output_for_mask=False,
                 return_state=False):
        super().__init__(return_sequences, go_backwards, zero_output_for_mask, return_state)
        self.activation = activation  # a manual activation class: one instance per step keeps that step's values

    def forward(self, inputs, kernel, recurrent_kernel, bias=None, mask=None):
        self.W, self.U, self.has_bias = kernel, recurrent_kernel, bias is not None
        x, [h] = self._sequence_and_states(inputs, 1)
        self.xs, self.h_prevs, self.activations = self._steps(x, mask), [], []
        hs = []
        for t, x_t in enumerate(self.xs):
            self.h_prevs.append(h)
            z = ops.matmul(x_t, kernel) + (0 if bias is None else bias) + ops.matmul(h, recurrent_kernel)
            self.activations.append(self.activation())
            h = self._kept(t, self.activations[-1].forward(z), h)
            hs.append(h)
        return self._with_states(self._output(hs), [h])

    def backward(self, dout):
        dout, [dh_next] = self._douts(dout, 1)
        dzs, dxs, arriving = [], [], self._arriving(dout, len(self.xs))
        for t in reversed(range(len(self.xs))):
            dh, dh_kept = self._split(t, _sum(arriving[t], dh_next))
            dz = self.activations[t].backward(dh)
            dzs.append(dz)
            dxs.append(ops.matmul(dz, ops.transpose(self.W)))
            dh_next = _sum(self._to_the_previous_state(dz), dh_kept)
        dzs, dxs = dzs[::-1], dxs[::-1]
        self.grads = self._weight_gradients(dzs)
        return self._input_gradients(dxs, [dh_next])


class LSTM(_Recurrent):
    """z = x_t·W + h_{t−1}·U + b split into four gates; i = g(z_i), f = g(z_f), o = g(z_o) (g the recurrent
    activation, σ by default), c̃ = a(z_c) (a tanh by default); c_t = f·c_{t−1} + i·c̃, h_t = o·a(c_t); h_0 = c_0 = 0.
    BPTT, per step from the last: dc = dc_{t+1}·f_{t+1} + dh·o·a′(c_t); then dz_i = dc·c̃·g′, dz_f = dc·c_{t−1}·g′,
    dz_c = dc·i·a′, dz_o = dh·a(c_t)·g′; dh_{t−1} = dz·Uᵀ, dx_t = dz·Wᵀ, and the weights as SimpleRNN's."""

    def __init__(self, activation, recurrent_activation, return_sequences=False, go_backwards=False,
                 zero_output_for_mask=False, return_state=False):
        super().__init__(return_sequences, go_backwards, zero_output_for_mask, return_state)
        self.activation, self.recurrent_activation = activation, recurrent_activation

    def forward(self, inputs, kernel, recurrent_kernel, bias=None, mask=None):
        self.W, self.U, self.has_bias = kernel, recurrent_kernel, bias is not None
        x, [h, c] = self._sequence_and_states(inputs, 2)
        self.xs, self.h_prevs, self.cells = self._steps(x, mask), [], []
        hs = []
        for t, x_t in enumerate(self.xs):
            self.h_prevs.append(h)
            z = ops.matmul(x_t, kernel) + ops.matmul(h, recurrent_kernel) + (0 if bias is None else bias)
            z_i, z_f, z_c, z_o = ops.split(z, 4, axis=1)
            gates = {name: self.recurrent_activation() for name in "ifo"}
            cell = {"gates": gates, "candidate": self.activation(), "output": self.activation(), "c_prev": c}
            i, f, o = gates["i"].forward(z_i), gates["f"].forward(z_f), gates["o"].forward(z_o)
            candidate = cell["candidate"].forward(z_c)
            c_new = f * c + i * candidate
            cell.update(i=i, f=f, o=o, candidate_value=candidate, squashed=cell["output"].forward(c_new))
            h, c = self._kept(t, o * cell["squashed"], h), self._kept(t, c_new, c)  # both states keep theirs
            self.cells.append(cell)
            hs.append(h)
        return self._with_states(self._output(hs), [h, c])

    def backward(self, dout):
        dout, [dh_next, dc_next] = self._douts(dout, 2)
        dzs, dxs, arriving = [], [], self._arriving(dout, len(self.xs))
        for t in reversed(range(len(self.xs))):
            (dh, dh_kept), (dc, dc_kept) = self._split(t, _sum(arriving[t], dh_next)), self._split(t, dc_next)
            cell = self.cells[t]
            dc = _sum(cell["output"].backward(dh * cell["o"]), dc)  # through h = o·a(c), and from c_{t+1}
            gates = cell["gates"]
            dz = ops.concatenate([gates["i"].backward(dc * cell["candidate_value"]),
                                  gates["f"].backward(dc * cell["c_prev"]),
                                  cell["candidate"].backward(dc * cell["i"]),
                                  gates["o"].backward(dh * cell["squashed"])], axis=1)
            dzs.append(dz)
            dxs.append(ops.matmul(dz, ops.transpose(self.W)))
            dh_next = _sum(self._to_the_previous_state(dz), dh_kept)
            dc_next = _sum(self._to_the_previous_cell(dc, cell), dc_kept)
        dzs, dxs = dzs[::-1], dxs[::-1]
        self.grads = self._weight_gradients(dzs)
        return self._input_gradients(dxs, [dh_next, dc_next])

    @staticmethod
    def _to_the_previous_cell(dc, cell):
        return dc * cell["f"]  # c_t = f·c_{t−1} + i·c̃: the forget gate scales what reaches c_{t−1}


class GRU(_Recurrent):
    """Keras's GRU (reset_after=True, its default): x_t·W + b_x and h_{t−1}·U + b_h split into update, reset and
    candidate parts; z = g(x_z + u_z), r = g(x_r + u_r), h̃ = a(x_h + r·u_h); h_t = z·h_{t−1} + (1 − z)·h̃ (g σ, a tanh
    by default). BPTT, per step: dz = g′·dh·(h_{t−1} − h̃), da = a′·dh·(1 − z), dr = g′·da·u_h; the input side gets
    (dz, dr, da), the recurrent side (dz, dr, da·r); dh_{t−1} = dh·z + (dz, dr, da·r)·Uᵀ. The bias is (2, 3u):
    its rows are b_x and b_h."""

    def __init__(self, activation, recurrent_activation, return_sequences=False, go_backwards=False,
                 zero_output_for_mask=False, return_state=False):
        super().__init__(return_sequences, go_backwards, zero_output_for_mask, return_state)
        self.activation, self.recurrent_activation = activation, recurrent_activation

    def forward(self, inputs, kernel, recurrent_kernel, bias=None, mask=None):
        self.W, self.U, self.has_bias = kernel, recurrent_kernel, bias is not None
        x, [h] = self._sequence_and_states(inputs, 1)
        self.xs, self.h_prevs, self.cells = self._steps(x, mask), [], []
        hs = []
        for t, x_t in enumerate(self.xs):
            self.h_prevs.append(h)
            x_z, x_r, x_h = ops.split(ops.matmul(x_t, kernel) + (0 if bias is None else bias[0]), 3, axis=1)
            u_z, u_r, u_h = ops.split(ops.matmul(h, recurrent_kernel) + (0 if bias is None else bias[1]), 3, axis=1)
            cell = {"update": self.recurrent_activation(), "reset": self.recurrent_activation(),
                    "candidate": self.activation(), "h_prev": h, "u_h": u_h}
            z, r = cell["update"].forward(x_z + u_z), cell["reset"].forward(x_r + u_r)
            candidate = cell["candidate"].forward(x_h + r * u_h)
            cell.update(z=z, r=r, candidate_value=candidate)
            h = self._kept(t, z * h + (1 - z) * candidate, h)
            self.cells.append(cell)
            hs.append(h)
        return self._with_states(self._output(hs), [h])

    def backward(self, dout):
        dout, [dh_next] = self._douts(dout, 1)
        input_dzs, recurrent_dzs, dxs, arriving = [], [], [], self._arriving(dout, len(self.xs))
        for t in reversed(range(len(self.xs))):
            cell, (dh, dh_kept) = self.cells[t], self._split(t, _sum(arriving[t], dh_next))
            dz = cell["update"].backward(dh * (cell["h_prev"] - cell["candidate_value"]))
            da = cell["candidate"].backward(dh * (1 - cell["z"]))
            dr = cell["reset"].backward(da * cell["u_h"])
            input_dz, recurrent_dz = ops.concatenate([dz, dr, da], axis=1), ops.concatenate([dz, dr, da * cell["r"]],
                                                                                            axis=1)
            input_dzs.append(input_dz)
            recurrent_dzs.append(recurrent_dz)
            dxs.append(ops.matmul(input_dz, ops.transpose(self.W)))
            dh_next = _sum(self._direct_to_the_previous_state(dh, cell) + self._to_the_previous_state(recurrent_dz),
                           dh_kept)
        input_dzs, recurrent_dzs, dxs = input_dzs[::-1], recurrent_dzs[::-1], dxs[::-1]
        self.grads = self._weight_gradients(input_dzs, recurrent_dzs)
        if self.has_bias:  # (2, 3u): the input side's row, then the recurrent side's
            self.grads["bias"] = ops.stack([self.grads["bias"], sum(ops.sum(dz, axis=0) for dz in recurrent_dzs)])
        return self._input_gradients(dxs, [dh_next])

    @staticmethod
    def _direct_to_the_previous_state(dh, cell):
        return dh * cell["z"]  # h_t = z·h_{t−1} + ...: the update gate passes h_{t−1} straight through
