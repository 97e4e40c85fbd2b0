"""Where a compiled training step spends its time, op by op, from TensorFlow's own profiler trace.

The benchmark's goal is a training path at 60 % of the float32 matmul limit (docs/benchmarks.md); the bench finds the
compiled GradientTape step itself at ~45 %. This module answers why: it traces calls of a step with
`tf.profiler`, reads each op's duration from the trace (XPlane), and sorts the ops into the products that
the limit counts (Conv2D and MatMul, forward and both backward ones, as oneDNN runs them) and everything else
(activations and their gradients, pooling, dropout's random numbers, the optimizer's update). Each product
gets its own share of the limit, and the step its share if everything else took no time: a ceiling for any
change that keeps TensorFlow's kernels for the model's layers.

The op times add up to the step only when ops run one at a time (inter-op threads 1, which the script sets);
with two inter-op threads, independent ops (a convolution's two backward products) overlap and each one's
duration includes its share of the other's contention.
"""
import glob
import re
import tempfile
from collections import defaultdict

import keras
import tensorflow as tf

from backprop_suite.bench import TRAINING_OVER_FORWARD, forward_flops_per_sample
from gradcheck.errors import InputError

# An executed op's trace event is named "scope/op_name:OpType"; the executor's own events contain "::"
# (ExecutorState::Process) or spaces, and ParallelFor shards no colon at all.
_OP_EVENT = re.compile(r"^(?P<name>[^:\s]+):(?P<type>\w+)$")
# A function call's event spans the ops it runs, which have events of their own.
_CALL_TYPES = ("StatefulPartitionedCall", "PartitionedCall")


def _xplane_module():
    try:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2
    except ImportError as error:
        raise InputError(f"this TensorFlow ({tf.__version__}) has no tsl.profiler.protobuf.xplane_pb2 to read its "
                         f"profiler trace with ({error}); install the pinned one: bash scripts/setup.sh") from None
    return xplane_pb2


def traced_op_times(run, calls: int) -> dict[str, dict]:
    """Run `run()` `calls` times under TensorFlow's profiler; per op name: its type and milliseconds per call.
    `run` must wait for its result (call .numpy() on it), so that every op ends inside the trace."""
    xplane_pb2 = _xplane_module()
    with tempfile.TemporaryDirectory(prefix="op-profile-") as folder:
        tf.profiler.experimental.start(folder)
        try:
            for _ in range(calls):
                run()
        finally:
            tf.profiler.experimental.stop()
        traces = glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)
        if len(traces) != 1:
            raise RuntimeError(f"TensorFlow's profiler wrote {len(traces)} traces, not 1, to {folder}")
        space = xplane_pb2.XSpace()
        with open(traces[0], "rb") as trace:
            space.ParseFromString(trace.read())
    times = defaultdict(lambda: {"type": None, "ms": 0.0})
    for plane in space.planes:
        names = {key: metadata.name for key, metadata in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                match = _OP_EVENT.match(names.get(event.metadata_id, ""))
                if match is None or match["type"] in _CALL_TYPES:
                    continue
                op = times[match["name"]]
                op["type"] = match["type"]
                op["ms"] += event.duration_ps / 1e9 / calls  # picoseconds
    return dict(times)


def op_kind(op_type: str) -> str:
    """"product" for the ops the matmul limit counts (convolutions and matrix products, forward or backward,
    fused with a bias or an activation or not, under oneDNN's _Mkl/_MklNative names too); else "other"."""
    plain = re.sub(r"^_Mkl(Native)?", "", op_type)
    return "product" if "Conv2D" in plain or "MatMul" in plain else "other"


def op_owner(op_name: str, layer_names) -> tuple[str, str]:
    """(layer or scope, "forward" or "backward") of an op in a Keras model's training step: Keras scopes a
    layer's ops by its name, suffixed "_1" or so in a traced function, and the tape puts the gradient's ops
    under "gradient_tape/". An op outside every layer (the optimizer, the loss) goes by its top scope."""
    direction = "backward" if op_name.startswith("gradient_tape/") else "forward"
    scopes = op_name.removeprefix("gradient_tape/").split("/")
    for scope in scopes[:-1]:
        layer = re.sub(r"_\d+$", "", scope)
        if layer in layer_names or scope in layer_names:
            return (scope if scope in layer_names else layer), direction
    return re.sub(r"_\d+$", "", scopes[0]), direction


def summarise_step(op_times: dict, model: keras.Model, batch_size: int, step_ms: float,
                   matmul_flops_per_second: float) -> dict:
    """The step's op times by layer and kind, each product's share of the matmul limit, and the step's share
    as measured and if every op but the products took no time.

    A product's FLOPs are its layer's forward FLOPs for the batch: the forward product, the gradient with
    respect to the input and the one with respect to the kernel each multiply the same pairs once."""
    layer_names = {layer.name for layer in model.layers}
    for name in sorted(layer_names):  # a trace suffixes scopes ("dense" becomes "dense_1"): these would be confused
        base = re.sub(r"_\d+$", "", name)
        if base != name and base in layer_names:
            raise ValueError(f"layers {base!r} and {name!r}: their ops cannot be told apart in a trace, whose "
                             "scopes carry such suffixes; give the layers distinct names")
    flops = forward_flops_per_sample(model)
    step_flops = TRAINING_OVER_FORWARD * sum(flops.values()) * batch_size  # as the bench counts the limit
    by_owner = defaultdict(lambda: {"forward_ms": 0.0, "backward_ms": 0.0})
    products, other_ms = [], 0.0
    for name, op in sorted(op_times.items(), key=lambda item: -item[1]["ms"]):
        owner, direction = op_owner(name, layer_names)
        by_owner[owner][f"{direction}_ms"] += op["ms"]
        if op_kind(op["type"]) == "product" and owner in flops:
            seconds = op["ms"] / 1e3
            products.append({"layer": owner, "direction": direction, "op": name, "type": op["type"],
                             "ms": op["ms"],
                             "fraction_of_limit": flops[owner] * batch_size / seconds / matmul_flops_per_second})
        else:
            other_ms += op["ms"]
    products_ms = sum(product["ms"] for product in products)
    if not products_ms:
        raise ValueError(f"the trace holds no convolution or matrix product of the model's layers "
                         f"({len(op_times)} ops): nothing to compare with the matmul limit")
    return {"batch_size": batch_size, "step_ms": step_ms, "ops_ms": products_ms + other_ms,
            "products_ms": products_ms, "other_ms": other_ms,
            "fraction_of_limit": step_flops / (step_ms / 1e3) / matmul_flops_per_second,
            "fraction_of_limit_if_only_products": step_flops / (products_ms / 1e3) / matmul_flops_per_second,
            "products": products,
            "by_layer": {owner: dict(times) for owner, times in
                         sorted(by_owner.items(), key=lambda item: -sum(item[1].values()))}}
