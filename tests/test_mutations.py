"""A checker that passes a broken formula is the worst defect this suite can have. Each test breaks one
manual formula the way a slip of the pen would and requires the three-way check of a zoo model to FAIL,
manual vs tape, at exactly the tensors the slip corrupts (the tape and finite differences still agree)."""
import functools

import keras
import numpy as np
import pytest
from conftest import tiered
from keras import ops

from backprop_suite.models.zoo import ZOO
from backprop_suite.worked_examples.cross_backend import KNOWN_DIFFERENCES
from gradcheck import autodiff, layer_check
from gradcheck.check import random_batch
from gradcheck.dtypes import checked_in
from gradcheck.manual import (
    attention,
    conv,
    layers,
    losses,
    normalization,
    recurrent,
    regularizers,
    table,
    wrappers,
)
from gradcheck.methods import cast_batch, dropout_masks_for, three_way_check

pytestmark = pytest.mark.any_backend


def wrap_backward(cls, after):
    """cls.backward, then `after(self, dout, dx) -> dx` to slip something in."""
    original = cls.backward
    return lambda self, dout: after(self, dout, original(self, dout))


def conv_kernel_gradient_ignores_the_stride(self, dout, dx):
    kh, kw = self.K.shape[:2]
    dK = ops.conv(ops.transpose(self.xp, (3, 1, 2, 0)), ops.transpose(dout, (1, 2, 0, 3)), strides=self.dilation,
                  padding="valid", dilation_rate=1)  # should be dilated by the stride
    self.grads["kernel"] = ops.transpose(dK[:, :kh, :kw, :], (1, 2, 0, 3))
    return dx


def conv_input_gradient_with_an_undilated_kernel(self, dout, dx):
    (dh, dw), kh, kw = self.dilation, *self.K.shape[:2]
    padded = ops.pad(dout, [[0, 0], [(kh - 1) * dh, (kh - 1) * dh], [(kw - 1) * dw, (kw - 1) * dw], [0, 0]])
    rotated = ops.transpose(ops.flip(self.K, axis=(0, 1)), (0, 1, 3, 2))
    wrong = ops.conv(padded, rotated, strides=1, padding="valid", dilation_rate=1)  # should be dilated by d
    return wrong[:, :dx.shape[1], :dx.shape[2], :]


def window_products_ignore_the_dilation(xp, dout, kernel_size, strides, dilation):
    return conv.kernel_gradient_by_window_products(xp, dout, kernel_size, strides, (1, 1))  # should step by d


def shifted_rows_ignore_the_dilation(xp, dout, kernel_size, strides, dilation):
    return conv.kernel_gradient_by_shifted_rows(xp, dout, kernel_size, strides, (1, 1))  # should shift by a·d, b·d


def max_pool_routes_to_the_transposed_window_position(self, dout):
    zero = ops.zeros_like(dout)
    return self._routed_back([((b, a), ops.where(mask, dout, zero)) for (a, b), mask in self.masks])  # (a, b) swapped


def max_pool_tiled_routes_to_the_transposed_window_position(self, dout):
    (ph, pw), (_, ho, wo, c) = self.pool, dout.shape
    routed = self.first_max * ops.reshape(dout, (-1, ho, 1, wo, 1, c))  # entry (a, b) at [:, i, a, j, b]
    swapped = ops.transpose(routed, (0, 1, 4, 3, 2, 5))  # (a, b) -> (b, a)
    dx = ops.reshape(swapped, (-1, ho * ph, wo * pw, c))
    return ops.pad(dx, [[0, 0], [0, self.h - ho * ph], [0, self.w - wo * pw], [0, 0]])


def avg_pool_divides_by_the_whole_window(self, dout):
    share = dout / (self.pool[0] * self.pool[1])  # padded entries counted, unlike TensorFlow's forward
    return self._routed_back([((a, b), share) for a in range(self.pool[0]) for b in range(self.pool[1])])


def batch_norm_treats_batch_statistics_as_constants(self, dout):
    return self._parameter_grads(dout, self.axes) * self.inv_std  # drops the paths through μ and σ²


def batch_norm_gamma_gradient_without_xhat(self, dout, dx):
    self.grads["gamma"] = ops.sum(dout, axis=self.axes)  # should be Σ dout·x̂
    return dx


def batch_norm_on_batch_statistics_even_when_frozen(layer, training):
    return [normalization.BatchNormalization(layer.epsilon, training)]  # should be `training and layer.trainable`


def layer_norm_drops_the_variance_path(self, dout):
    dxhat = self._parameter_grads(dout, self.other_axes)
    m = int(np.prod([dout.shape[a] for a in self.axes]))
    return self.inv_std / m * (m * dxhat - ops.sum(dxhat, axis=self.axes, keepdims=True))  # − x̂·Σ(dx̂·x̂) lost


def embedding_gradient_averaged_over_a_tokens_occurrences(self, dout):
    one_hot = ops.one_hot(ops.reshape(self.ids, (-1,)), self.rows, dtype=dout.dtype)
    summed = ops.matmul(ops.transpose(one_hot), ops.reshape(dout, (-1, dout.shape[-1])))
    self.grads = {"embeddings": summed / ops.maximum(ops.sum(one_hot, axis=0), 1)[:, None]}  # should stay a sum
    return ops.zeros(ops.shape(self.ids), dout.dtype)


def depthwise_input_gradient_without_the_kernel(self, dout):
    (kh, kw, channels, multiplier), (dh, dw), (_, h, w, _) = self.K.shape, self.dilation, dout.shape
    per_kernel = ops.reshape(dout, (-1, h, w, channels, multiplier))
    routed = [((a * dh, b * dw), ops.sum(per_kernel, axis=-1)) for a in range(kh) for b in range(kw)]  # ·K[a,b] lost
    return conv._crop(conv._route_back(routed, self.strides, self.xp.shape), self.pads, self.h, self.w)


DEPTHWISE_BACKWARD = conv.DepthwiseConv2D.backward  # the right one, kept before any test replaces it


def depthwise_reads_output_channels_multiplier_major(self, dout):
    """Keras lays out a depthwise output channel as c·m + k (the input channel's m kernels side by side); read as
    k·C + c, each kernel's gradient meets another channel's dout (equal when m = 1)."""
    (_, _, channels, multiplier), (_, h, w, _) = self.K.shape, dout.shape
    swapped = ops.reshape(ops.transpose(ops.reshape(dout, (-1, h, w, multiplier, channels)), (0, 1, 2, 4, 3)),
                          dout.shape)
    return DEPTHWISE_BACKWARD(self, swapped)


def weights_of(*names) -> set[str]:
    return {f"{name}/{weight}" for name in names for weight in ("kernel", "bias")}


# gated_mlp: swish → (gate ⊙ value = glu) → elu; swish → selu; mean = avg(elu, selu): a slip reaching `mean` reaches
# all five
UPSTREAM_OF_THE_MEAN = weights_of("swish", "gate", "value", "elu", "selu")
# recurrent_text_classifier: embedding (mask_zero) → rnn → gru → (lstm, average) → summary → head
BELOW_THE_LSTM = {"embedding/embeddings"} | {f"{layer}/{weight}" for layer in ("rnn", "gru")
                                            for weight in ("kernel", "recurrent_kernel", "bias")}
# bidirectional_text_classifier: embedding → bi_gru (sequences, summed) → per_step (TimeDistributed Dense) → bi_lstm
BIDIRECTIONAL = "bidirectional_text_classifier/"

# Slips that no layer's own check can see, checked in the model's walk alone (manual vs tape per tensor): the sum of
# a shared layer's calls, the losses and penalties (not layers), and a layer's several outputs (return_state).
MODEL_WALK_ONLY = {"shared_layer_keeps_one_calls_gradient", "l2_penalty_gradient_without_the_factor_2",
                   "l1_penalty_gradient_without_the_sign", "activity_penalty_gradient_not_divided_by_the_batch",
                   "mean_squared_error_without_the_factor_2", "returned_states_gradients_swapped"}

MUTATIONS = {
    # name: (zoo model, loss (None: the zoo's), (class or module, attribute, replacement), tensors that must fail)
    "conv_same_crop_ignores_the_padding_offset": (
        "strided_cnn_gap", None, (conv, "_crop", lambda x, pads, h, w: x[:, :h, :w, :]),
        {"conv1/kernel", "conv1/bias"}),  # conv2 is padded (1, 1); conv3 (0, 1) and conv4 (valid) are unaffected
    "conv_kernel_gradient_ignores_the_stride": (
        "strided_cnn_gap", None, (conv.Conv2D, "backward",
                                  wrap_backward(conv.Conv2D, conv_kernel_gradient_ignores_the_stride)),
        {"conv1/kernel", "conv3/kernel", "conv4/kernel"}),  # conv2 has stride 1
    "conv_window_products_ignore_the_dilation": (
        "pooling_and_reshaping", None,
        (conv, "KERNEL_GRADIENTS", {**conv.KERNEL_GRADIENTS, "window_products": window_products_ignore_the_dilation}),
        {"dilated/kernel"}),  # the default formulation; only the dilated conv's kernel gradient changes
    "conv_shifted_rows_ignore_the_dilation": (  # in the default's place: every conv of this model has stride 1
        "pooling_and_reshaping", None,
        (conv, "KERNEL_GRADIENTS", {**conv.KERNEL_GRADIENTS, "window_products": shifted_rows_ignore_the_dilation}),
        {"dilated/kernel"}),
    "conv_input_gradient_with_an_undilated_kernel": (
        "pooling_and_reshaping", None, (conv.Conv2D, "backward",
                                           wrap_backward(conv.Conv2D, conv_input_gradient_with_an_undilated_kernel)),
        {"conv0/kernel", "conv0/bias"}),  # the dilated conv's dx reaches conv0 only
    "max_pool_routes_to_the_transposed_window_position": (
        "pooling_and_reshaping", None,
        (conv.MaxPooling2D, "backward", max_pool_routes_to_the_transposed_window_position),
        {"conv0/kernel", "conv0/bias", "dilated/kernel", "dilated/bias"}),
    "max_pool_tiled_routes_to_the_transposed_window_position": (  # the tiled pools' 6-D view
        "cifar_convnet", None,
        (conv.MaxPooling2D, "_tiled_backward", max_pool_tiled_routes_to_the_transposed_window_position),
        {"conv1/kernel", "conv1/bias", "conv2/kernel", "conv2/bias", "conv3/kernel", "conv3/bias", "conv4/kernel",
         "conv4/bias"}),  # every conv lies upstream of a pool; the dense layers after them are still right
    "avg_pool_divides_by_the_whole_window": (
        "pooling_and_reshaping", None, (conv.AveragePooling2D, "backward", avg_pool_divides_by_the_whole_window),
        {"conv0/kernel", "conv0/bias", "dilated/kernel", "dilated/bias"}),
    "global_max_pool_spreads_like_a_mean": (
        "pooling_and_reshaping", None, (conv.GlobalMaxPooling2D, "forward", lambda self, x: (
            setattr(self, "share", ops.ones_like(x) / (x.shape[1] * x.shape[2])), ops.max(x, axis=(1, 2)))[1]),
        {"conv0/kernel", "conv0/bias", "dilated/kernel", "dilated/bias"}),
    "global_avg_pool_forgets_one_over_hw": (
        "resnet_block", None, (conv.GlobalAveragePooling2D, "backward", lambda self, dout: ops.broadcast_to(
            ops.reshape(dout, (-1, 1, 1, self.shape[-1])), (dout.shape[0], *self.shape[1:]))),
        {"stem/kernel", "stem_bn/gamma", "stem_bn/beta", "conv_a/kernel", "bn_a/gamma", "bn_a/beta", "conv_b/kernel",
         "bn_b/gamma", "bn_b/beta"}),
    "batch_norm_treats_batch_statistics_as_constants": (
        "resnet_block", None,
        (normalization.BatchNormalization, "backward", batch_norm_treats_batch_statistics_as_constants),
        # bn_b's own γ, β see the true dout (from the skip's Add); everything upstream of a BatchNorm is hit
        {"stem/kernel", "stem_bn/gamma", "stem_bn/beta", "conv_a/kernel", "bn_a/gamma", "bn_a/beta", "conv_b/kernel"}),
    "batch_norm_inference_gamma_gradient_without_xhat": (
        "bn_inference_cnn", None,
        (normalization.BatchNormalization, "backward",
         wrap_backward(normalization.BatchNormalization, batch_norm_gamma_gradient_without_xhat)),
        {"bn/gamma"}),
    "layer_norm_drops_the_variance_path": (
        "mlp_layernorm_dropout", None,
        (normalization.LayerNormalization, "backward", layer_norm_drops_the_variance_path),
        {"dense1/kernel", "dense1/bias", "norm1/gamma", "norm1/beta", "dense2/kernel", "dense2/bias"}),
    "softmax_jacobian_diagonal_only": (
        "pooling_and_reshaping", "mean_squared_error",  # mean squared error: the Softmax layer is not fused
        (layers.Softmax, "backward", lambda self, dout: dout * self.y * (1 - self.y)),
        {"conv0/kernel", "conv0/bias", "dilated/kernel", "dilated/bias", "no_bias/kernel"}),
    "zero_padding_crop_ignores_the_offset": (
        "pooling_and_reshaping", None, (layers.ZeroPadding2D, "backward", lambda self, dout: dout[:, :self.h, :self.w]),
        {"conv0/kernel", "conv0/bias"}),
    "flatten_unflattens_in_reverse_order": (
        "simple_conv_net", None, (layers.Reshape, "backward",
                                  lambda self, dout: ops.reshape(ops.flip(dout, axis=-1), self.shape)),
        {"conv1/kernel", "conv1/bias"}),
    "add_sends_dout_to_its_first_input_only": (
        "resnet_block", None, (layers.Add, "backward", lambda self, dout: [dout] + [ops.zeros_like(dout)] *
                               (self.count - 1)),
        {"stem/kernel", "stem_bn/gamma", "stem_bn/beta"}),  # the skip's second input is stem's output
    "concatenate_splits_without_offsets": (
        "two_inputs_two_outputs", None, (layers.Concatenate, "backward",
                                         lambda self, dout: [dout[:, :size] for size in self.sizes]),
        {"feature_dense/kernel", "feature_dense/bias"}),  # the first part (image_dense) is still right
    "shared_layer_keeps_one_calls_gradient": (  # each tower weight's gradient overwritten, not summed, per call
        "siamese_towers", None, (layers, "accumulate", lambda sums, key, value: sums.__setitem__(key, value)),
        {"tower_conv/kernel", "tower_conv/bias", "tower_dense/kernel", "tower_dense/bias"}),  # no tensor forks here
    "frozen_batch_norm_on_batch_statistics": (  # Keras runs a frozen BatchNormalization on its moving statistics
        "partly_frozen_cnn", None, (table, "MANUAL_LAYERS", {**table.MANUAL_LAYERS, keras.layers.BatchNormalization:
                                                             batch_norm_on_batch_statistics_even_when_frozen}),
        {"conv/kernel", "conv/bias", "head/kernel", "head/bias"}),  # every trainable weight: the forward differs
    "l2_penalty_gradient_without_the_factor_2": (  # d(λΣw²)/dw = 2λw written λw
        "regularized_mlp", None, (regularizers.L1L2, "backward", lambda self: (
            ops.cast(self.l1, self.w.dtype) * ops.sign(self.w) + ops.cast(self.l2, self.w.dtype) * self.w)),
        {"dense1/kernel", "dense2/kernel", "head/kernel"}),  # head/bias is 0 at Keras's init, so 2λw = λw = 0 there
    "l1_penalty_gradient_without_the_sign": (  # d(λΣ|w|)/dw = λ·sign(w) written λ·w
        "regularized_mlp", None, (regularizers.L1L2, "backward", lambda self: (
            ops.cast(self.l1, self.w.dtype) * self.w + 2 * ops.cast(self.l2, self.w.dtype) * self.w)),
        {"dense1/kernel", "dense1/bias", "dense2/kernel", "dense2/bias"}),  # dense2's L1 kernel and activity penalty
    "activity_penalty_gradient_not_divided_by_the_batch": (  # Keras divides an activity penalty by the batch size
        "regularized_mlp", None, (regularizers.ActivityPenalty, "backward", lambda self: self.penalty.backward()),
        {"dense1/kernel", "dense1/bias", "dense2/kernel", "dense2/bias"}),  # dense2's output and what lies upstream
    "embedding_gradient_averaged_over_a_tokens_occurrences": (  # a token's row sums dout over every occurrence
        "text_cnn", None, (layers.Embedding, "backward", embedding_gradient_averaged_over_a_tokens_occurrences),
        {"embedding/embeddings"}),
    "swish_derivative_without_its_x_term": (  # σ(1 + x(1 − σ)) written σ
        "gated_mlp", None, (layers.SiLU, "backward", lambda self, dout: dout * self.s), weights_of("swish")),
    "elu_derivative_forgets_the_exponential": (  # y + α (that is αeˣ) written α; the Dense and the layer ELU
        "gated_mlp", None, (layers.ELU, "backward", lambda self, dout: ops.where(self.x > 0, dout, dout * self.alpha)),
        weights_of("elu", "gate", "value", "swish")),
    "selu_derivative_without_the_scale_on_the_left": (  # y + scale·α written y + α
        "gated_mlp", None, (layers.SELU, "backward", lambda self, dout: ops.where(
            self.x > 0, dout * self.SCALE, dout * (self.y + self.ALPHA))), weights_of("selu", "swish")),
    "softplus_derivative_at_the_output": (  # σ(x) written σ(y)
        "gated_mlp", None, (layers.Softplus, "backward", lambda self, dout: dout * ops.sigmoid(ops.softplus(self.x))),
        weights_of("softplus", "swish")),
    "leaky_relu_with_slope_1_on_the_left": (
        "gated_mlp", None, (layers.LeakyReLU, "backward", lambda self, dout: dout), UPSTREAM_OF_THE_MEAN),
    "relu6_passes_the_gradient_below_zero": (  # 0 < x < 6 written x < 6
        "gated_mlp", None, (layers.ReLU6, "backward", lambda self, dout: ops.where(self.x < 6, dout, 0)),
        UPSTREAM_OF_THE_MEAN),
    "multiply_sends_each_input_its_own_value": (  # dout·Π_{j≠i} x_j written dout·x_i
        "gated_mlp", None, (layers.Multiply, "backward", lambda self, dout: [dout * x for x in self.xs]),
        weights_of("gate", "value", "swish")),
    "subtract_forgets_the_minus": (
        "gated_mlp", None, (layers.Subtract, "backward", lambda self, dout: [dout, dout]),
        weights_of("gate", "value", "swish")),  # only the subtracted input, glu, is wrong
    "average_forgets_one_over_n": (
        "gated_mlp", None, (layers.Average, "backward", lambda self, dout: [dout] * self.count), UPSTREAM_OF_THE_MEAN),
    "maximum_routes_to_the_smaller_input": (
        "gated_mlp", None, (layers.Maximum, "wins", staticmethod(ops.less)), UPSTREAM_OF_THE_MEAN),
    "minimum_routes_to_the_larger_input": (
        "gated_mlp", None, (layers.Minimum, "wins", staticmethod(ops.greater)), UPSTREAM_OF_THE_MEAN),
    "upsampling_gradient_takes_one_entry_per_block": (  # the block's sum written its first entry
        "conv_autoencoder", None, (layers.UpSampling2D, "backward", lambda self, dout: dout[:, ::self.size[0],
                                                                                              ::self.size[1], :]),
        weights_of("encode", "deconv") | {"prelu/alpha"}),
    "cropping_pads_back_on_the_wrong_sides": (
        "conv_autoencoder", None, (layers.Cropping2D, "backward", lambda self, dout: ops.pad(dout, [
            [0, 0], self.cropping[0][::-1], self.cropping[1][::-1], [0, 0]])),
        weights_of("encode", "deconv") | {"prelu/alpha"}),
    "depthwise_input_gradient_without_the_kernel": (  # the separable conv's depthwise step too: all below it fail
        "mobilenet_block", None, (conv.DepthwiseConv2D, "backward", wrap_backward(
            conv.DepthwiseConv2D, lambda self, dout, dx: depthwise_input_gradient_without_the_kernel(self, dout))),
        weights_of("project") | {"stem/kernel", "stem_bn/gamma", "stem_bn/beta", "depthwise/kernel",
                                 "depthwise_bn/gamma", "depthwise_bn/beta"}),
    "depthwise_reads_output_channels_multiplier_major": (  # the depthwise layer has m = 2; the separable's m = 1
        "mobilenet_block", None, (conv.DepthwiseConv2D, "backward", depthwise_reads_output_channels_multiplier_major),
        {"depthwise/kernel", "stem/kernel", "stem_bn/gamma", "stem_bn/beta"}),
    "conv_transpose_backward_rotates_the_kernel": (  # its dL/dx is C(dout) with K as it is, not a rotated K
        "conv_autoencoder", None, (conv.Conv2DTranspose, "backward", wrap_backward(
            conv.Conv2DTranspose, lambda self, dout, dx: self.adjoint.forward(dout, ops.flip(self.K, axis=(0, 1))))),
        weights_of("encode") | {"prelu/alpha"}),
    "prelu_slope_gradient_from_the_positive_side": (  # Σ dout·min(x, 0) written Σ dout·max(x, 0)
        "conv_autoencoder", None, (layers.PReLU, "backward", wrap_backward(layers.PReLU, lambda self, dout, dx: (
            self.grads.__setitem__("alpha", ops.sum(dout * ops.maximum(self.x, 0), axis=(0, 1, 2), keepdims=True)[0]),
            dx)[1])),
        {"prelu/alpha"}),
    "simple_rnn_backpropagates_one_step_only": (  # truncated BPTT: dh_{t−1} = dz·Uᵀ dropped
        "recurrent_text_classifier", None, (recurrent.SimpleRNN, "_to_the_previous_state", lambda self, dz: ops.zeros(
            (dz.shape[0], self.U.shape[0]), dz.dtype)),
        {"rnn/kernel", "rnn/recurrent_kernel", "rnn/bias", "embedding/embeddings"}),  # the GRU, LSTM above are right
    "lstm_backpropagates_one_step_only": (
        "recurrent_text_classifier", None, (recurrent.LSTM, "_to_the_previous_state", lambda self, dz: ops.zeros(
            (dz.shape[0], self.U.shape[0]), dz.dtype)),
        BELOW_THE_LSTM | {"lstm/kernel", "lstm/recurrent_kernel", "lstm/bias"}),
    "lstm_cell_gradient_passes_the_forget_gate_unscaled": (  # dc_{t−1} = dc·f written dc
        "recurrent_text_classifier", None, (recurrent.LSTM, "_to_the_previous_cell", staticmethod(lambda dc, cell: dc)),
        BELOW_THE_LSTM | {"lstm/kernel", "lstm/recurrent_kernel", "lstm/bias"}),
    "gru_drops_the_update_gates_direct_path": (  # dh_{t−1} = dh·z + dz·Uᵀ written without dh·z
        "recurrent_text_classifier", None, (recurrent.GRU, "_direct_to_the_previous_state", staticmethod(
            lambda dh, cell: ops.zeros_like(dh))),
        BELOW_THE_LSTM),
    "a_masked_step_passes_its_gradient_into_the_cell": (  # dL/dh_t splits: m·dh into the cell, (1 − m)·dh to h_{t−1}
        "recurrent_text_classifier", None, (recurrent.SimpleRNN, "_split", lambda self, t, dh: (dh, None)),
        {"rnn/kernel", "rnn/bias", "embedding/embeddings"}),  # the padding's h_{t−1} is 0: dU = Σ h_{t−1}ᵀ·dz stays
    "masked_average_shares_the_gradient_among_all_steps": (  # dL/dx_t = m_t·dout / Σ m, written dout / T
        "recurrent_text_classifier", None,
        (conv.GlobalAveragePooling1D, "backward", lambda self, dout: ops.broadcast_to(
            ops.expand_dims(dout, 1) / self.shape[1], self.shape)),
        BELOW_THE_LSTM),
    "bidirectional_backward_share_left_in_time_order": (  # the backward direction's dout must be flipped back
        "bidirectional_text_classifier", None, (wrappers.Bidirectional, "_in_processing_order",
                                                lambda self, dout: dout),
        {f"{BIDIRECTIONAL}bi_gru/backward_gru/gru_cell/{weight}" for weight in ("kernel", "recurrent_kernel", "bias")}
        | {f"{BIDIRECTIONAL}embedding/embeddings"}),  # bi_lstm returns last states: nothing to flip there
    "time_distributed_weights_keep_the_last_steps_gradient": (  # a weight shared over the steps sums their gradients
        "bidirectional_text_classifier", None, (wrappers, "accumulate", lambda sums, key, value: sums.__setitem__(
            key, value)),
        {f"{BIDIRECTIONAL}per_step/dense/kernel", f"{BIDIRECTIONAL}per_step/dense/bias"}),
    "attention_query_gradient_without_one_over_sqrt_h": (  # S = (Q/√H)·Kᵀ: dQ = dS·K/√H written dS·K
        "transformer_classifier", None, (attention.MultiHeadAttention, "_scores_backward", lambda self, d_scores: (
            ops.einsum("bnts,bsnh->btnh", d_scores, self.K), ops.einsum("bnts,btnh->bsnh", d_scores, self.Q))),
        {"attention/query/kernel", "attention/query/bias", "token_embedding/embeddings"}),
    "self_attention_input_without_the_keys_gradient": (  # x is query, key and value: it gets all three gradients
        "transformer_classifier", None, (attention.MultiHeadAttention, "_input_gradients", lambda self, dx: [
            dx[role] for role in self.roles]),
        {"token_embedding/embeddings"}),  # every weight's gradient is right; only the path to x misses a term
    "mean_squared_error_without_the_factor_2": (
        "two_inputs_two_outputs", None, (losses.MeanSquaredError, "backward",
                                         lambda self: (self.y - self.t) / self.count),
        {"value/kernel", "value/bias", "shared/kernel", "shared/bias", "image_dense/kernel", "image_dense/bias",
         "feature_dense/kernel", "feature_dense/bias"}),  # only the other head's own weights stay right
}


def layers_named(model, x, training, monkeypatch, owner, attribute, replacement) -> tuple[list[str], set[str]]:
    """The layer-by-layer check with the slip in place: the layers it names as failing, in topological order, and the
    layers whose own check ran the slipped code (recorded by wrapping it)."""
    checking, ran = {}, set()
    if callable(replacement) and not isinstance(replacement, type):
        def slipped(*args, **kwargs):
            ran.add(checking["layer"])
            return replacement(*args, **kwargs)
        monkeypatch.setattr(owner, attribute, slipped)
    else:
        monkeypatch.setattr(owner, attribute, replacement)
        ran = None  # not a function: which layers read it is not recorded

    def check_recording(call, *args, **kwargs):
        checking["layer"] = call.name
        return check_one_layer(call, *args, **kwargs)

    monkeypatch.setattr(layer_check, "check_layer", check_recording)
    model64 = checked_in(model, "float64")
    x64, _ = cast_batch(x, x, "float64")
    masks = dropout_masks_for(model64, x64, training, None, 0)
    rows = layer_check.check_layers(model64, x64, training, masks, progress=False)["calls"]
    return [row["layer"] for row in rows if not row["passed"]], ran


check_one_layer = layer_check.check_layer


def assert_the_slip_is_named_by_its_layer(failed: list[str], ran: set[str] | None, mutation: str):
    """Layer by layer, the slip fails a layer that ran it, and no other; where it is only reached through a Keras mask
    or several outputs (the formulas there are checked in the model's walk alone), no layer is named."""
    if mutation in MODEL_WALK_ONLY:
        assert failed == [], failed
        return
    assert failed, "no layer named"
    if ran is not None:
        assert set(failed) <= ran, (failed, ran)


def check_of_the_zoo_model(model_name: str, loss=None) -> dict:
    entry = ZOO[model_name]
    loss = loss or entry.loss
    keras.utils.set_random_seed(0)  # the same weights whatever ran before: the unbroken check is one known case
    model = entry.build()
    x, y = random_batch(model, 6, loss, seed=3)
    return three_way_check(model, x, y, loss=loss, training=entry.training, fd_entries=6)


@functools.cache
def unbroken_check_passes(model_name: str, loss=None) -> bool:
    """The same check with every formula as it is: it passes, so what fails in a mutation's check is the slip. Run
    once per model and loss (the same weights and batch each time)."""
    return check_of_the_zoo_model(model_name, loss)["passed"]


# Every slip runs on TensorFlow. On JAX and PyTorch, each zoo model's first slip: the check of every model can fail
# there too. The formulas are the same keras.ops code on every backend; what differs by backend, its ops under the
# formulas and its autodiff, is checked unbroken by the zoo test (tests/test_check_any_model.py) and at the kinks,
# where the backends take different sides, by tests/test_manual_layers.py. (CI time: on JAX each check compiles.)
def first_slip_of_each_model() -> list[str]:
    firsts = {}
    for mutation, (model_name, *_) in MUTATIONS.items():
        firsts.setdefault(model_name, mutation)
    return list(firsts.values())


# Two mutations in the everyday tier (a merge, a convolution; the real models' slips and test_gradcheck.py add
# more); all of them with --all.
EVERYDAY_MUTATIONS = ("add_sends_dout_to_its_first_input_only", "conv_same_crop_ignores_the_padding_offset")


@pytest.mark.parametrize("mutation", tiered(MUTATIONS, everyday=EVERYDAY_MUTATIONS) if autodiff.BACKEND == "tensorflow"
                         else first_slip_of_each_model())
def test_mutation_fails_the_check_at_exactly_the_corrupted_tensors(mutation, monkeypatch):
    model_name, loss, (owner, attribute, replacement), expected = MUTATIONS[mutation]
    if (model_name, autodiff.BACKEND) in KNOWN_DIFFERENCES:
        pytest.skip(f"{model_name} has no manual formula on {autodiff.BACKEND}: "
                    f"{KNOWN_DIFFERENCES[model_name, autodiff.BACKEND]}")
    if autodiff.BACKEND == "tensorflow":  # elsewhere the zoo test passes the model unbroken on this backend
        assert unbroken_check_passes(model_name, loss)
    monkeypatch.setattr(owner, attribute, replacement)
    report = check_of_the_zoo_model(model_name, loss)
    failed = {c["tensor"] for c in report["comparisons"] if c["methods"] == "manual_vs_tape" and not c["passed"]}
    assert failed == expected
    assert all(c["passed"] for c in report["comparisons"] if c["methods"] == "tape_vs_finite_differences")
    keras.utils.set_random_seed(0)
    model = ZOO[model_name].build()
    x, _ = random_batch(model, 6, loss or ZOO[model_name].loss, seed=3)
    assert_the_slip_is_named_by_its_layer(*layers_named(model, x, ZOO[model_name].training, monkeypatch, owner,
                                                        attribute, replacement), mutation)


def test_a_gelu_derivative_without_its_x_phi_term_fails_the_check_at_its_layer(monkeypatch):
    """GELU is in no zoo model (TensorFlow's casts 1/√2 through float32, so the backends' zoo losses would differ), so
    its slip gets a model of its own: y′ = Φ(x) + x·φ(x) written Φ(x) corrupts exactly the GELU layer's weights."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="gelu", name="gelu"),
                              keras.layers.Dense(3, activation="softmax", name="head")], name="gelu_mlp")
    x, y = random_batch(model, 6, seed=3)
    assert three_way_check(model, x, y, fd_entries=6)["passed"]  # unbroken
    monkeypatch.setattr(layers.GELU, "backward", lambda self, dout: dout * 0.5 * (1 + ops.erf(self.x / np.sqrt(2))))
    report = three_way_check(model, x, y, fd_entries=6)
    failed = {c["tensor"] for c in report["comparisons"] if c["methods"] == "manual_vs_tape" and not c["passed"]}
    assert failed == {"gelu/kernel", "gelu/bias"}
    assert all(c["passed"] for c in report["comparisons"] if c["methods"] == "tape_vs_finite_differences")


def test_a_rescaling_backward_that_forgets_the_scale_fails_the_check_upstream_of_it(monkeypatch):
    """Rescaling is in no zoo model between weights, so its slip gets a model of its own: dL/dx = dout·scale
    written dout corrupts exactly the Dense before it."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh", name="before"),
                              keras.layers.Rescaling(0.5, offset=1.0, name="scale"),
                              keras.layers.Dense(3, activation="softmax", name="after")], name="rescaled")
    x, y = random_batch(model, 6, seed=3)
    assert three_way_check(model, x, y, fd_entries=6)["passed"]  # unbroken
    monkeypatch.setattr(layers.Rescaling, "backward", lambda self, dout: dout)
    report = three_way_check(model, x, y, fd_entries=6)
    failed = {c["tensor"] for c in report["comparisons"] if c["methods"] == "manual_vs_tape" and not c["passed"]}
    assert failed == {"before/kernel", "before/bias"}
    assert all(c["passed"] for c in report["comparisons"] if c["methods"] == "tape_vs_finite_differences")


def two_towers_scored_by_dot():
    left, right = keras.Input((4,)), keras.Input((3,))
    score = keras.layers.Dot(axes=1)([keras.layers.Dense(5, activation="tanh", name="left")(left),
                                      keras.layers.Dense(5, name="right")(right)])
    return keras.Model([left, right], keras.layers.Dense(2, activation="softmax", name="head")(score))


def encoder_states_into_a_decoder():
    """keras-io's seq2seq in small: the encoder's returned states start the decoder."""
    encoder_inputs, decoder_inputs = keras.Input((4, 3)), keras.Input((3, 2))
    _, h, c = keras.layers.LSTM(3, return_state=True, name="encoder")(encoder_inputs)
    decoded = keras.layers.LSTM(3, return_sequences=True, name="decoder")(decoder_inputs, initial_state=[h, c])
    return keras.Model([encoder_inputs, decoder_inputs], keras.layers.Dense(2, activation="softmax", name="head")(
        keras.layers.GlobalAveragePooling1D()(decoded)))


def hard_silu_mlp():
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(6, name="scale_up"),  # inputs spread past ±3
                             keras.layers.Rescaling(4.0), keras.layers.Activation("hard_silu"),
                             keras.layers.Dense(3, activation="softmax", name="head")])


def layer_scaled_mlp():
    from keras.src.applications import convnext
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh", name="before"),
                             convnext.LayerScale(0.3, 4, name="layer_scale"),
                             keras.layers.Dense(3, activation="softmax", name="head")])


ENCODER = {"encoder/kernel", "encoder/recurrent_kernel", "encoder/bias"}
SLIPS_IN_REAL_MODELS = {  # the formulas issue 28 added, each slipped in a model of keras-io's or keras.applications'
    "dot_sends_each_input_its_own_value": (  # dx = dout·z written dout·x
        two_towers_scored_by_dot, layers.Dot, "backward",
        lambda self, dout: [dout * self.x, dout * self.z], {"left/kernel", "left/bias", "right/kernel", "right/bias"}),
    "returned_states_gradients_swapped": (  # h_T's gradient started at c_T and c_T's at h_T
        encoder_states_into_a_decoder, recurrent._Recurrent, "_douts",
        lambda self, dout, count: (dout[0], list(dout[1:])[::-1]) if self.return_state else (dout, [None] * count),
        ENCODER),
    "initial_states_get_no_gradient": (  # dh_0, dc_0 dropped: the same, seen from the decoder's side
        encoder_states_into_a_decoder, recurrent._Recurrent, "_input_gradients",
        lambda self, dxs, grads: [self._input_gradient(dxs), *[ops.zeros_like(g) for g in grads]] if self.given_states
        else self._input_gradient(dxs), ENCODER),
    "hard_silu_derivative_of_the_hard_sigmoid": (  # (2x + 3)/6 written 1/6 inside (−3, 3)
        hard_silu_mlp, layers.HardSiLU, "backward",
        lambda self, dout: ops.where(ops.logical_and(self.x > -3, self.x < 3), dout / 6,
                                     ops.where(self.x >= 3, dout, 0)),
        {"scale_up/kernel", "scale_up/bias"}),
    "layer_scale_input_gradient_without_gamma": (  # dx = dout·γ written dout
        layer_scaled_mlp, layers.LayerScale, "backward",
        wrap_backward(layers.LayerScale, lambda self, dout, dx: dout), {"before/kernel", "before/bias"}),
}


@pytest.mark.parametrize("slip", tiered(SLIPS_IN_REAL_MODELS, everyday=("layer_scale_input_gradient_without_gamma",
                                                                     "dot_sends_each_input_its_own_value")))
def test_a_slip_in_a_formula_for_real_models_fails_the_check_at_exactly_the_corrupted_tensors(slip, monkeypatch):
    build, owner, attribute, replacement, expected = SLIPS_IN_REAL_MODELS[slip]
    keras.utils.set_random_seed(0)
    model = build()
    rng = np.random.default_rng(0)
    for variable in model.trainable_variables:  # generic weights: biases off 0, γ off its initial value
        variable.assign(rng.normal(0, 0.5, variable.shape))
    x, y = random_batch(model, 4, seed=3)
    assert three_way_check(model, x, y, fd_entries=6)["passed"]  # unbroken
    monkeypatch.setattr(owner, attribute, replacement)
    report = three_way_check(model, x, y, fd_entries=6)
    failed = {c["tensor"] for c in report["comparisons"] if c["methods"] == "manual_vs_tape" and not c["passed"]}
    assert failed == expected
    assert all(c["passed"] for c in report["comparisons"] if c["methods"] == "tape_vs_finite_differences")
    assert_the_slip_is_named_by_its_layer(*layers_named(model, x, False, monkeypatch, owner, attribute, replacement),
                                          slip)
