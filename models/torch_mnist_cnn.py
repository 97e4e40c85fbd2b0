"""The C003-1 CNN in PyTorch, for the side-by-side benchmark only (torch is an optional extra: pip install
'.[torch]'). Same layers and parameter count as backprop_suite.models.mnist_cnn (600,810); PyTorch's NCHW layout."""


def build_torch_mnist_cnn():
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(),  # (32, 26, 26)
        nn.Conv2d(32, 32, 3), nn.ReLU(),  # (32, 24, 24)
        nn.MaxPool2d(2), nn.Dropout(0.25),  # (32, 12, 12)
        nn.Flatten(),  # 4608
        nn.Linear(4608, 128), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(128, 10),  # logits: CrossEntropyLoss applies the softmax, as Keras's softmax + CE
    )
