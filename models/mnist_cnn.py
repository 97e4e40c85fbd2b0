"""The Keras MNIST CNN of note 003 (C003-1), written with today's Keras API."""
import keras
from keras import layers


def build_mnist_cnn() -> keras.Sequential:
    """Conv-Conv-Pool-Dropout-Dense-Dropout-Dense: 600,810 parameters."""
    # Keras 1.2.2's Convolution2D(32, 3, 3) is Conv2D(32, (3, 3)): valid padding, stride 1.
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1), name="image"),
        layers.Conv2D(32, (3, 3), activation="relu", name="conv1"),  # (26, 26, 32)
        layers.Conv2D(32, (3, 3), activation="relu", name="conv2"),  # (24, 24, 32)
        layers.MaxPooling2D((2, 2), name="pool"),  # (12, 12, 32)
        layers.Dropout(0.25, name="dropout1"),
        layers.Flatten(name="flatten"),  # (4608,)
        layers.Dense(128, activation="relu", name="dense1"),
        layers.Dropout(0.5, name="dropout2"),
        layers.Dense(10, activation="softmax", name="dense2"),
    ], name="mnist_cnn")
