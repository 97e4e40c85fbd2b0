"""A zoo of models in the style of the keras-io examples and the book (ゼロから作るDL ch. 6–7), for checking
that the gradient verifier handles what users build: Sequential, Functional DAGs (skips, several inputs and
outputs, layers called twice), a subclassed model, frozen layers, and the common vision/MLP layers. Each
entry says how it is checked: in training mode (batch statistics, dropout masks) or inference mode, and with
which loss."""
from dataclasses import dataclass, field

import keras
import numpy as np
from keras import layers


def keras_io_mnist_convnet() -> keras.Sequential:
    """keras-io's "Simple MNIST convnet", layer for layer: 34,826 parameters."""
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ], name="keras_io_mnist_convnet")


def simple_conv_net() -> keras.Sequential:
    """The book's ch. 7 SimpleConvNet: conv(30 filters 5×5)-ReLU-pool(2)-affine(100)-ReLU-affine(10)-softmax."""
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(30, 5, activation="relu", name="conv1"),
        layers.MaxPooling2D(2, name="pool1"),
        layers.Flatten(),
        layers.Dense(100, activation="relu", name="affine1"),
        layers.Dense(10, activation="softmax", name="affine2"),
    ], name="simple_conv_net")


def resnet_block() -> keras.Model:
    """A small ResNet: stem conv, one residual block (Conv–BN–ReLU–Conv–BN, identity skip, Add), GAP, softmax."""
    inputs = keras.Input(shape=(12, 12, 3))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    stem = layers.Activation("relu", name="stem_relu")(x)
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv_a")(stem)
    x = layers.BatchNormalization(name="bn_a")(x)
    x = layers.ReLU(name="relu_a")(x)
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv_b")(x)
    x = layers.BatchNormalization(name="bn_b")(x)
    x = layers.Add(name="skip")([x, stem])  # the fork: stem's output feeds conv_a and the skip
    x = layers.Activation("relu", name="block_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(5, activation="softmax", name="head")(x), name="resnet_block")


def strided_cnn_gap() -> keras.Sequential:
    """All-convolutional: same-padded stride-2 convolutions instead of pooling, then global average pooling."""
    return keras.Sequential([
        keras.Input(shape=(15, 15, 1)),
        layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv1"),  # (8, 8, 8)
        layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2"),  # (8, 8, 8)
        layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv3"),  # (4, 4, 16)
        layers.Conv2D(16, 2, strides=(2, 1), padding="valid", activation="tanh", name="conv4"),  # (2, 3, 16)
        layers.GlobalAveragePooling2D(name="gap"),
        layers.Dense(10, activation="softmax", name="head"),
    ], name="strided_cnn_gap")


def mlp_layernorm_dropout() -> keras.Sequential:
    """An MLP with layer normalisation and dropout, logits out (trained with from_logits=True)."""
    return keras.Sequential([
        keras.Input(shape=(20,)),
        layers.Dense(32, name="dense1"),
        layers.LayerNormalization(name="norm1"),
        layers.Activation("tanh", name="act1"),
        layers.Dropout(0.3, name="dropout1"),
        layers.Dense(32, activation="relu", name="dense2"),
        layers.LayerNormalization(center=False, name="norm2"),
        layers.Dense(6, name="logits"),
    ], name="mlp_layernorm_dropout")


def two_inputs_two_outputs() -> keras.Model:
    """Functional, two inputs joined by Concatenate, two heads: a class (softmax) and a value (linear)."""
    image = keras.Input(shape=(6, 6, 1), name="image")
    features = keras.Input(shape=(4,), name="features")
    a = layers.Dense(12, activation="sigmoid", name="image_dense")(layers.Flatten(name="flatten")(image))
    b = layers.Dense(5, activation="relu", name="feature_dense")(features)
    joined = layers.Concatenate(name="concat")([a, b, features])
    hidden = layers.Dense(10, activation="tanh", name="shared")(joined)
    label = layers.Dense(3, activation="softmax", name="label")(hidden)
    value = layers.Dense(1, name="value")(hidden)
    return keras.Model([image, features], [label, value], name="two_inputs_two_outputs")


@keras.saving.register_keras_serializable(package="backprop_suite_zoo")
class SubclassedMLP(keras.Model):
    """A subclassed model: its call is Python, so only the methods that need no formulas can check it."""

    def __init__(self, hidden: int = 16, classes: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.classes = hidden, classes
        self.dense1 = layers.Dense(hidden, activation="tanh", name="dense1")
        self.dense2 = layers.Dense(classes, activation="softmax", name="dense2")

    def call(self, x):
        h = self.dense1(x)
        return self.dense2(h + 0.5 * h * h)  # a nonlinearity no layer table knows

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "classes": self.classes}


def subclassed_mlp() -> keras.Model:
    model = SubclassedMLP(name="subclassed_mlp")
    model(np.zeros((1, 8)))  # built by its first call, as subclassed models are
    return model


def bn_inference_cnn() -> keras.Sequential:
    """Conv–BN–ReLU–pool–Dense, checked in inference mode: BatchNorm uses its moving statistics."""
    return keras.Sequential([
        keras.Input(shape=(10, 10, 2)),
        layers.Conv2D(6, 3, name="conv"),
        layers.BatchNormalization(name="bn"),
        layers.ReLU(name="relu"),
        layers.MaxPooling2D(2, name="pool"),
        layers.Flatten(name="flatten"),
        layers.Dense(4, activation="sigmoid", name="head"),
    ], name="bn_inference_cnn")


def pooling_and_reshaping() -> keras.Sequential:
    """Reshape, a conv, ZeroPadding2D, a dilated conv, overlapping same-padded average and max pooling, global max
    pooling, a Dense without bias and a separate Softmax layer."""
    return keras.Sequential([
        keras.Input(shape=(288,)),
        layers.Reshape((12, 12, 2), name="to_image"),
        layers.Conv2D(4, 2, activation="tanh", name="conv0"),
        layers.ZeroPadding2D(((1, 2), (0, 1)), name="pad"),
        layers.Conv2D(6, 3, dilation_rate=2, activation="tanh", name="dilated"),
        layers.AveragePooling2D(3, strides=2, padding="same", name="avg"),
        layers.MaxPooling2D(3, strides=2, padding="same", name="max"),
        layers.GlobalMaxPooling2D(name="global_max"),
        layers.Dense(4, use_bias=False, name="no_bias"),
        layers.Softmax(name="softmax"),
    ], name="pooling_and_reshaping")


def cifar_convnet() -> keras.Sequential:
    """keras-io-style CIFAR-10 convnet, about 0.9M parameters: the size the full check is benchmarked at."""
    return keras.Sequential([
        keras.Input(shape=(32, 32, 3)),
        layers.Conv2D(32, 3, activation="relu", name="conv1"),
        layers.Conv2D(32, 3, activation="relu", name="conv2"),
        layers.MaxPooling2D(2, name="pool1"),
        layers.Conv2D(64, 3, activation="relu", name="conv3"),
        layers.Conv2D(64, 3, activation="relu", name="conv4"),
        layers.MaxPooling2D(2, name="pool2"),
        layers.Flatten(name="flatten"),
        layers.Dropout(0.5, name="dropout"),
        layers.Dense(512, activation="relu", name="dense1"),
        layers.Dense(10, activation="softmax", name="head"),
    ], name="cifar_convnet")


def siamese_towers() -> keras.Model:
    """Two images through one tower, joined by Concatenate: the tower's layers are called twice, so each of their
    weights meets the loss along two paths and its gradient is the sum of both calls' (the chain rule's sum)."""
    conv = layers.Conv2D(4, 3, activation="relu", name="tower_conv")
    pool = layers.MaxPooling2D(2, name="tower_pool")
    flatten = layers.Flatten(name="tower_flatten")
    dense = layers.Dense(6, activation="tanh", name="tower_dense")
    left, right = keras.Input(shape=(8, 8, 1), name="left"), keras.Input(shape=(8, 8, 1), name="right")
    joined = layers.Concatenate(name="join")([dense(flatten(pool(conv(image)))) for image in (left, right)])
    return keras.Model([left, right], layers.Dense(2, activation="softmax", name="same")(joined), name="siamese_towers")


def partly_frozen_cnn() -> keras.Sequential:
    """Fine-tuning: a pretrained block frozen (trainable=False) between trainable layers. Its weights are not
    parameters, so only the others are checked, and their gradient passes through it. Checked in training mode,
    where Keras runs a frozen BatchNormalization on its moving statistics, not the batch's."""
    model = keras.Sequential([
        keras.Input(shape=(10, 10, 2)),
        layers.Conv2D(6, 3, activation="relu", name="conv"),
        layers.Conv2D(6, 3, name="frozen_conv", trainable=False),
        layers.BatchNormalization(name="frozen_bn", trainable=False),
        layers.ReLU(name="relu"),
        layers.GlobalAveragePooling2D(name="gap"),
        layers.Dense(3, activation="softmax", name="head"),
    ], name="partly_frozen_cnn")
    rng = np.random.default_rng(0)  # moving statistics as a pretrained block has them, not the initial 0 and 1
    model.get_layer("frozen_bn").moving_mean.assign(rng.normal(0, 0.5, 6))
    model.get_layer("frozen_bn").moving_variance.assign(rng.uniform(0.5, 2, 6))
    return model


def regularized_mlp() -> keras.Sequential:
    """Weight decay and activity regularization, as keras-io's examples add them: Keras's fit minimises the data
    loss plus model.losses (every weight's penalty, each activity penalty divided by the batch size), so that is
    the function checked, and each penalty's gradient adds to the backward pass. The strengths are powers of 2:
    Keras's TensorFlow backend casts a Python λ to float32 before float64 (0.01 weighs 0.0099999998 there, 0.01 on
    JAX and PyTorch), which would make the backends' losses differ by 1e-8 relative."""
    return keras.Sequential([
        keras.Input(shape=(12,)),
        layers.Dense(16, activation="relu", kernel_regularizer=keras.regularizers.L2(2**-7), name="dense1"),
        layers.Dense(8, activation="tanh", kernel_regularizer=keras.regularizers.L1L2(l1=2**-7, l2=2**-7),
                     activity_regularizer=keras.regularizers.L1(2**-7), name="dense2"),
        layers.Dense(4, activation="softmax", kernel_regularizer=keras.regularizers.L2(2**-7),
                     bias_regularizer=keras.regularizers.L2(2**-7), name="head"),
    ], name="regularized_mlp")


def text_cnn() -> keras.Sequential:
    """keras-io's "Text classification from scratch" model, small: token ids → Embedding → Dropout → Conv1D → 1-D max
    pool → strided Conv1D → global max pool over time → Dense → Dropout → sigmoid. Integer inputs; the check draws
    ids below the Embedding's input_dim, and the Embedding's gradient sums dout over every place a token occurs."""
    return keras.Sequential([
        keras.Input(shape=(24,), dtype="int32"),
        layers.Embedding(40, 8, name="embedding"),
        layers.Dropout(0.5, name="embedding_dropout"),
        layers.Conv1D(8, 5, activation="relu", name="conv1"),  # (20, 8)
        layers.MaxPooling1D(2, name="pool1"),  # (10, 8)
        layers.Conv1D(8, 3, strides=2, padding="same", activation="relu", name="conv2"),  # (5, 8)
        layers.GlobalMaxPooling1D(name="max_over_time"),
        layers.Dense(8, activation="relu", name="dense"),
        layers.Dropout(0.5, name="dropout"),
        layers.Dense(1, activation="sigmoid", name="predictions"),
    ], name="text_cnn")


def mobilenet_block() -> keras.Sequential:
    """MobileNet's building blocks in small: a strided stem, a depthwise 3×3 convolution (two kernels per channel) with
    batch normalisation and ReLU6, a 1×1 projection, a separable convolution, global average pooling, softmax."""
    return keras.Sequential([
        keras.Input(shape=(12, 12, 3)),
        layers.Conv2D(6, 3, strides=2, padding="same", use_bias=False, name="stem"),  # (6, 6, 6)
        layers.BatchNormalization(name="stem_bn"),
        layers.ReLU(6.0, name="stem_relu6"),
        layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, use_bias=False, name="depthwise"),  # 12 ch.
        layers.BatchNormalization(name="depthwise_bn"),
        layers.ReLU(6.0, name="depthwise_relu6"),
        layers.Conv2D(8, 1, name="project"),
        layers.SeparableConv2D(8, 3, strides=2, padding="same", activation="relu", name="separable"),  # (3, 3, 8)
        layers.GlobalAveragePooling2D(name="gap"),
        layers.Dense(4, activation="softmax", name="head"),
    ], name="mobilenet_block")


def recurrent_text_classifier() -> keras.Model:
    """keras-io's recurrent text classifiers in small, on padded sequences: token ids (0 is padding) → Embedding with
    mask_zero=True → SimpleRNN and a backwards GRU over the whole sequence → an LSTM's last state and the average over
    the steps side by side → softmax. The formulas backpropagate through time: each step's state gets its output's
    gradient plus what the next step sends back, and the shared kernels sum their gradients over the steps. Keras's
    mask reaches every recurrent layer and the average: a padded step keeps the previous state and counts in no mean,
    so it passes no gradient back."""
    tokens = keras.Input(shape=(9,), dtype="int32")
    x = layers.Embedding(30, 6, mask_zero=True, name="embedding")(tokens)
    x = layers.SimpleRNN(5, return_sequences=True, name="rnn")(x)
    x = layers.GRU(4, return_sequences=True, go_backwards=True, name="gru")(x)
    summary = layers.Concatenate(name="summary")([layers.LSTM(4, name="lstm")(x),
                                                  layers.GlobalAveragePooling1D(name="average")(x)])
    outputs = layers.Dense(3, activation="softmax", name="head")(summary)
    return keras.Model(tokens, outputs, name="recurrent_text_classifier")


def bidirectional_text_classifier() -> keras.Sequential:
    """keras-io's bidirectional LSTM classifier in small, with a layer applied to each step between: token ids →
    Embedding → a Bidirectional GRU's sequences (its two directions summed) → a TimeDistributed Dense → a
    Bidirectional LSTM's last states (concatenated) → softmax. The backward direction's outputs come out last step
    first and are flipped back into time order; each direction's kernels get their own gradients."""
    return keras.Sequential([
        keras.Input(shape=(6,), dtype="int32"),
        layers.Embedding(20, 4, name="embedding"),
        layers.Bidirectional(layers.GRU(3, return_sequences=True, name="gru"), merge_mode="sum", name="bi_gru"),
        layers.TimeDistributed(layers.Dense(4, activation="tanh", name="dense"), name="per_step"),
        layers.Bidirectional(layers.LSTM(3, name="lstm"), name="bi_lstm"),  # named: the weights' paths say them
        layers.Dense(3, activation="softmax", name="head"),
    ], name="bidirectional_text_classifier")


def transformer_classifier() -> keras.Model:
    """keras-io's "Text classification with Transformer" in small: token ids → Embedding → one Transformer block
    (multi-head self-attention, residual Add, LayerNormalization, a feed-forward Dense pair, Add, LayerNormalization)
    → global average pooling → softmax. The attention has dropout, as keras-io's blocks do, and is checked in
    inference mode; its dropout also makes Keras compute the softmax itself, in float64, where JAX's fused
    dot_product_attention computes it in float32 whatever the model's dtype."""
    tokens = keras.Input(shape=(6,), dtype="int32")
    x = layers.Embedding(20, 8, name="token_embedding")(tokens)
    attended = layers.MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.1, name="attention")(x, x)
    x = layers.LayerNormalization(name="attention_norm")(layers.Add(name="attention_skip")([x, attended]))
    hidden = layers.Dense(16, activation="relu", name="feed_forward_1")(x)
    x = layers.LayerNormalization(name="feed_forward_norm")(
        layers.Add(name="feed_forward_skip")([x, layers.Dense(8, name="feed_forward_2")(hidden)]))
    pooled = layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = layers.Dense(3, activation="softmax", name="head")(pooled)
    return keras.Model(tokens, outputs, name="transformer_classifier")


def gated_mlp() -> keras.Model:
    """The activations and merges of current MLP blocks: swish, a gated linear unit (sigmoid gate ⊙ value), ELU and
    SELU branches averaged, a difference, a leaky ReLU and ReLU6 compared by Maximum and Minimum, softplus. Slopes
    and α are powers of 2: TensorFlow casts a Python slope through float32 (as it does λ), the other backends not."""
    inputs = keras.Input(shape=(10,))
    h = layers.Dense(12, activation="swish", name="swish")(inputs)
    gate = layers.Dense(12, activation="sigmoid", name="gate")(h)
    value = layers.Dense(12, name="value")(h)
    glu = layers.Multiply(name="glu")([gate, value])
    elu = layers.Dense(12, activation="elu", name="elu")(glu)
    selu = layers.Dense(12, activation="selu", name="selu")(h)
    mean = layers.Average(name="mean")([elu, selu])
    difference = layers.Subtract(name="difference")([mean, glu])
    leaky = layers.LeakyReLU(2**-3, name="leaky")(difference)
    capped = layers.ReLU(6.0, name="relu6")(mean)
    larger = layers.Maximum(name="larger")([leaky, capped])
    smaller = layers.Minimum(name="smaller")([leaky, capped, layers.ELU(2**-1, name="elu_half")(glu)])
    soft = layers.Dense(4, activation="softplus", name="softplus")(h)
    features = layers.Concatenate(name="features")([larger, smaller, soft])
    return keras.Model(inputs, layers.Dense(3, activation="softmax", name="head")(features), name="gated_mlp")


def conv_autoencoder() -> keras.Sequential:
    """A convolutional autoencoder's shape path: conv with a learned leaky slope per channel (PReLU) → pool down, a
    transposed convolution up, pool down again, nearest upsampling back, a crop to the decoder's size, conv back to
    three sigmoid channels, mean squared error
    against the image. (Three, not one: PyTorch cannot differentiate a one-filter convolution in float64 under
    Keras; tests/test_check_any_model.py.)"""
    return keras.Sequential([
        keras.Input(shape=(10, 10, 3)),
        layers.Conv2D(4, 3, padding="same", name="encode"),
        layers.PReLU(shared_axes=[1, 2], alpha_initializer=keras.initializers.Constant(0.25), name="prelu"),
        layers.MaxPooling2D(2, name="down"),  # (5, 5, 4)
        layers.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu", name="deconv"),  # (10, 10, 4)
        layers.MaxPooling2D(2, name="down_again"),  # (5, 5, 4)
        layers.UpSampling2D((2, 2), name="up"),  # (10, 10, 4)
        layers.Cropping2D(((1, 1), (2, 0)), name="crop"),  # (8, 8, 4)
        layers.Conv2D(3, 3, padding="same", activation="sigmoid", name="decode"),
    ], name="conv_autoencoder")


@dataclass(frozen=True)
class ZooEntry:
    build: object
    training: bool = False  # check the training-mode function (batch statistics, dropout masks)
    loss: object = None  # None: the default for the output activation
    manual: bool = True  # whether every layer has a manual formula
    options: dict = field(default_factory=dict)


ZOO = {
    "keras_io_mnist_convnet": ZooEntry(keras_io_mnist_convnet, training=True),
    "simple_conv_net": ZooEntry(simple_conv_net),
    "resnet_block": ZooEntry(resnet_block, training=True),
    "strided_cnn_gap": ZooEntry(strided_cnn_gap),
    "mlp_layernorm_dropout": ZooEntry(mlp_layernorm_dropout, training=True,
                                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
    "two_inputs_two_outputs": ZooEntry(two_inputs_two_outputs, loss=["categorical_crossentropy", "mse"]),
    "subclassed_mlp": ZooEntry(subclassed_mlp, manual=False),
    "bn_inference_cnn": ZooEntry(bn_inference_cnn),
    "pooling_and_reshaping": ZooEntry(pooling_and_reshaping),
    "cifar_convnet": ZooEntry(cifar_convnet, training=True),
    "siamese_towers": ZooEntry(siamese_towers),
    "partly_frozen_cnn": ZooEntry(partly_frozen_cnn, training=True),
    "regularized_mlp": ZooEntry(regularized_mlp),
    "text_cnn": ZooEntry(text_cnn, training=True),
    "mobilenet_block": ZooEntry(mobilenet_block, training=True),
    "recurrent_text_classifier": ZooEntry(recurrent_text_classifier),
    "bidirectional_text_classifier": ZooEntry(bidirectional_text_classifier),
    "transformer_classifier": ZooEntry(transformer_classifier),
    "gated_mlp": ZooEntry(gated_mlp),
    "conv_autoencoder": ZooEntry(conv_autoencoder, loss="mean_squared_error"),
}
