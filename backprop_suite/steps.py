"""Custom training steps, compiled into a tf.function: the GradientTape step a Keras user writes, and
the same step with the gradient from the manual backward formulas instead of the tape.

Both take (x, t) batches and update the model's variables with `optimizer`; the loss is the one
the manual twin pairs with the output (categorical cross-entropy for softmax), averaged over the batch.
Dropout: the tape step draws Keras's own masks (training=True); the manual step draws its masks with
tf.random, or applies the given ones (a dict by layer name) so that both can be compared exactly.
"""
import keras
import tensorflow as tf

from gradcheck.manual.twin import ManualTwin
from gradcheck.parameters import parameters


def tape_step(model: keras.Model, optimizer: keras.optimizers.Optimizer):
    """step(x, t) -> loss: forward under a GradientTape, tape.gradient, optimizer.apply."""
    variables = model.trainable_variables
    # A Keras loss computes in float32 unless told otherwise, even for a float64 model.
    loss_fn = keras.losses.CategoricalCrossentropy(dtype=variables[0].dtype)

    @tf.function
    def step(x, t):
        with tf.GradientTape() as tape:
            loss = loss_fn(t, model(x, training=True))
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    return step


def _drawn_mask(dropout, x):
    return tf.random.uniform(tf.shape(x), dtype=x.dtype) >= dropout.rate  # keep with probability 1 − rate


def manual_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, dropout_masks: dict | None = None,
                compiled: bool = True):
    """step(x, t) -> loss with the manual twin's forward and backward (no tape); compiled unless told not to.

    On the first call, the formulations a layer has two of are timed at that batch's shapes (ManualTwin.
    choose_fastest_formulations) and the faster kept; step.formulations says which.
    """
    twin = ManualTwin(model)
    variables = list(parameters(model).values())  # the order of twin.gradient_tensors()
    masks = _drawn_mask if dropout_masks is None else dropout_masks

    def step(x, t):
        loss, grads = twin.loss_and_gradient_tensors(x, t, masks)
        # The update waits for the whole forward and backward: compiled without this, the optimizer's writes
        # sometimes overtook the twin's reads of the same weights (about 1 run in 10 differed from the tape
        # step, tests/test_steps.py); every read feeds the loss or a gradient, so this orders them all.
        with tf.control_dependencies([loss, *grads]):
            grads = [tf.identity(grad) for grad in grads]
        optimizer.apply(grads, variables)
        return loss

    run = tf.function(step, autograph=False) if compiled else step  # plain Python control flow

    def first_call_chooses(x, t):
        if first_call_chooses.formulations is None:
            first_call_chooses.formulations = twin.choose_fastest_formulations(
                x, t, tf.function if compiled else None)
        return run(x, t)

    first_call_chooses.formulations = None
    return first_call_chooses
