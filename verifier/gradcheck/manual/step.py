"""What a formula class is: one step of the manual backward pass, its forward next to its backward.

The manual twin (twin.py) runs a model's steps forward in graph order and backward in reverse; manual/table.py makes
a Keras layer's steps from its config. Every formula class derives from one of these two, so that what the twin reads
of a step is written here, with its default, and not probed for.
"""
from types import MappingProxyType


class Step:
    """A layer's (or an activation's) formula.

    forward(*inputs, **weights_and_options) -> output: computes what Keras's layer computes, keeping what backward
        needs; the weights come by the names in `weights`.
    backward(dout) -> dL/dinput (a list, one per input, for a layer of several inputs), given dL/doutput; it sets
        `grads`, {weight name: dL/dweight}.
    """
    weights: tuple[str, ...] = ()  # the Keras weights forward takes, by name ("kernel", "bias")
    grads = MappingProxyType({})  # set by backward where the step has weights; read-only until then
    follows_masks = False  # forward and backward take Keras's mask= (a recurrent layer, a pooling over time)
    return_state = False  # the output is [output, *last states] (a recurrent layer with return_state=True)

    def forward(self, *inputs, **weights_and_options):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, dout):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def choose_fastest(self, compile=None) -> dict[str, float]:
        """Where the step has several correct formulations whose speed depends on the CPU and the shapes (Conv2D's
        kernel gradient), time them at the last forward's shapes and keep the fastest: {formulation: seconds}; {}
        where there is one formulation."""
        return {}


class ScalarStep:
    """A formula that ends in a scalar: a loss (forward(y, t)) or a penalty (forward(w) or forward(y)).

    backward() -> dL/d(forward's first argument): the upstream gradient is dL/dL = 1.
    """
    integer_targets = False  # a sparse loss: its targets are class indices, not cast to the model's dtype

    def forward(self, *args):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self):
        raise NotImplementedError(f"{type(self).__name__}.backward")
