"""Manual penalties: Keras's built-in regularizers, `forward(w)` the penalty and `backward(w)` its gradient.

Keras's fit minimises the data loss plus model.losses: each weight regularizer R(w), and each activity
regularizer R(y) of a layer's output y divided by the batch size. One table keyed by the Keras regularizer
class, as manual/table.py is keyed by the layer class; a user's regularizer (a subclass too) gets no formula.
"""
import keras
from keras import ops

from gradcheck.manual.step import ScalarStep


class L1L2(ScalarStep):
    """R(w) = λ₁ Σ|w| + λ₂ Σw², so ∂R/∂w = λ₁ sign(w) + 2 λ₂ w (C003-3; sign(0) = 0, the subgradient autodiff
    takes at a zero weight)."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1, self.l2 = l1, l2

    def _strengths(self, w):
        # λ as Keras's penalty casts it: from a float32 tensor (L1 keeps one), or from a Python float that the
        # TensorFlow backend first converts to float32, so λ = 0.3 weighs 0.30000001192… in a float64 model there.
        return ops.cast(self.l1, w.dtype), ops.cast(self.l2, w.dtype)

    def forward(self, w):
        self.w = w
        l1, l2 = self._strengths(w)
        return l1 * ops.sum(ops.abs(w)) + l2 * ops.sum(ops.square(w))

    def backward(self):
        l1, l2 = self._strengths(self.w)
        return l1 * ops.sign(self.w) + 2 * l2 * self.w


class ActivityPenalty(ScalarStep):
    """An activity regularizer's term of the loss: R(y)/N of a layer's output y, N its batch size (Keras divides by
    it, so that the strength does not depend on the batch), so ∂/∂y = R'(y)/N."""

    def __init__(self, penalty):
        self.penalty = penalty

    def forward(self, y):
        self.n = ops.cast(ops.shape(y)[0], y.dtype)
        return self.penalty.forward(y) / self.n

    def backward(self):
        return self.penalty.backward() / self.n


MANUAL_REGULARIZERS = {
    keras.regularizers.L1: lambda r: L1L2(l1=r.l1),
    keras.regularizers.L2: lambda r: L1L2(l2=r.l2),
    keras.regularizers.L1L2: lambda r: L1L2(l1=r.l1, l2=r.l2),
}


def manual_penalty(regularizer) -> L1L2 | None:
    """The manual penalty computing `regularizer`, None where it has no formula here."""
    factory = MANUAL_REGULARIZERS.get(type(regularizer))
    return factory(regularizer) if factory else None
