"""Backpropagation by hand: each layer's forward paired with its backward, and a twin of a Keras model."""
