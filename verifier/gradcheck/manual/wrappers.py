"""Manual formulas of Keras's wrapper layers, made of the wrapped layers' own formulas; each `forward` next to its
`backward`. Protocol in manual/layers.py.

A wrapper's weights are its wrapped layers': TimeDistributed reads them by their names, and Bidirectional by
"forward/kernel", "backward/kernel", ..., since its two directions name theirs alike (manual/table.py's
`weights_by_name` gives the twin the same keys).
"""
from keras import ops

from gradcheck.manual.layers import accumulate
from gradcheck.manual.step import Step

DIRECTIONS = ("forward", "backward")  # a Bidirectional's forward_layer and backward_layer


def _their(step, weights: dict) -> dict:
    """The weights among `weights` that `step` reads (an absent bias stays absent)."""
    return {name: weights[name] for name in step.weights if name in weights}


def _under(direction: str, weights: dict) -> dict:
    """A direction's weights under their own names: "forward/kernel" is the forward layer's "kernel"."""
    return {name.removeprefix(f"{direction}/"): value for name, value in weights.items()
            if name.startswith(f"{direction}/")}


class Bidirectional(Step):
    """y = merge(F(x), flip_t(B(x))): F reads the sequence first step to last, B (the backward layer, go_backwards)
    last to first, and Keras flips B's sequence of outputs back into time order before merging (with
    return_sequences; a last state is not flipped). Backward: the merge's own backward splits dout (concat: each
    direction its half; sum: both all of it; ave: half each; mul: dout times the other), B's share is flipped back
    into its processing order, each direction backpropagates through time, and dL/dx is the sum of the two
    directions' dL/dx, the chain rule's sum over the two paths that read x. A Keras mask goes to both directions (the
    backward one reads it last step first, as its inputs), and stays on the output with return_sequences."""
    follows_masks = True

    def __init__(self, forward_step, backward_step, merge, return_sequences: bool):
        self.directions = dict(zip(DIRECTIONS, (forward_step, backward_step), strict=True))
        self.merge, self.flips = merge, return_sequences
        self.weights = tuple(f"{direction}/{name}" for direction, step in self.directions.items()
                             for name in step.weights)

    def _in_time_order(self, backward_y):
        return ops.flip(backward_y, axis=1) if self.flips else backward_y

    def _in_processing_order(self, backward_dout):
        return ops.flip(backward_dout, axis=1) if self.flips else backward_dout  # the flip's adjoint is the flip

    def forward(self, x, mask=None, **weights):
        forward_y, backward_y = (step.forward(x, mask=mask, **_their(step, _under(direction, weights)))
                                 for direction, step in self.directions.items())
        self.output_mask = mask if self.flips else None
        return self.merge.forward([forward_y, self._in_time_order(backward_y)])

    def backward(self, dout):
        forward_dout, backward_dout = self.merge.backward(dout)
        shares = (forward_dout, self._in_processing_order(backward_dout))
        dx, self.grads = 0, {}
        for (direction, step), share in zip(self.directions.items(), shares, strict=True):
            dx = dx + step.backward(share)
            self.grads.update({f"{direction}/{name}": grad for name, grad in step.grads.items()})
        return dx


class TimeDistributed(Step):
    """y[:, t] = f(x[:, t]) for every step t, with the same weights: the wrapped layer's formulas on each step's slice,
    as Keras computes it (a BatchNormalization in training takes each step's batch statistics). Backward: each step's
    formulas on its slice of dout; dL/dx stacks the slices, and a weight's gradient is the sum over the steps (shared
    across time, as a layer called T times)."""

    def __init__(self, make_steps):
        self.make_steps = make_steps  # a fresh list of the wrapped layer's steps: one per time step keeps its values
        self.weights = tuple(dict.fromkeys(name for step in make_steps() for name in step.weights))

    def forward(self, x, **weights):
        self.per_step, ys = [self.make_steps() for _ in range(x.shape[1])], []
        for t, steps in enumerate(self.per_step):
            y = x[:, t]
            for step in steps:
                y = step.forward(y, **_their(step, weights))
            ys.append(y)
        return ops.stack(ys, axis=1)

    def backward(self, dout):
        dxs, self.grads = [], {}
        for t, steps in enumerate(self.per_step):
            d = dout[:, t]
            for step in reversed(steps):
                d = step.backward(d)
                for name, grad in step.grads.items():
                    accumulate(self.grads, name, grad)
            dxs.append(d)
        return ops.stack(dxs, axis=1)
