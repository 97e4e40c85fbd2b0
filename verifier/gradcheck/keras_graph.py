"""The layer graph of a Keras model: which layer reads which tensors, in topological order.

Sequential models are a chain; Functional models (any DAG: forks, Add, Concatenate, several inputs
and outputs) are read from Keras's own nodes. A subclassed model has no graph (its `call` is Python),
so `layer_graph` returns None for it and only the methods that need no formulas can check it.
Tensors are named by the `id` of their symbolic KerasTensor (Keras's own convention in
`Function._run_through_graph`); a Sequential chain uses the layer positions instead.
A Functional graph also holds Keras's mask plumbing: the ops that compute a mask (`not_equal` for an
Embedding(mask_zero=True), `not_equal` and `any` for a Masking) and the masks passed to the layers that read them
(`mask=`); `data_flow` gives the graph without it.
"""
from dataclasses import dataclass, replace

import keras

from gradcheck import keras_internals


@dataclass(frozen=True)
class Node:
    layer: keras.layers.Layer
    inputs: tuple[int, ...]  # the tensors it reads, flattened in call order
    outputs: tuple[int, ...]
    arguments: object = None  # Keras's SymbolicArguments (how the layer was called); None: layer(*inputs)
    masks: tuple[int, ...] = ()  # those of `inputs` that Keras passed as mask arguments (mask=, query_mask=, ...)

    def call_arguments(self, values: dict) -> tuple[tuple, dict]:
        if self.arguments is None:
            return tuple(values[i] for i in self.inputs), {}
        return self.arguments.fill_in(values)


@dataclass(frozen=True)
class LayerGraph:
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    nodes: tuple[Node, ...]  # topological order: every node after the nodes it reads from

    def consumers(self, tensor: int) -> list[Node]:
        return [node for node in self.nodes if tensor in node.inputs]


def layer_graph(model: keras.Model) -> LayerGraph | None:
    """The model's layer graph; None for a subclassed model (no graph to read)."""
    if isinstance(model, keras.Sequential):
        layers = model.layers
        return LayerGraph((0,), (len(layers),), tuple(Node(layer, (k,), (k + 1,)) for k, layer in enumerate(layers)))
    by_depth = keras_internals.nodes_by_depth(model) if isinstance(model, keras.Model) else None
    if by_depth is None:
        return None
    nodes = []
    for depth in sorted(by_depth, reverse=True):  # deepest (nearest the inputs) first
        for node in by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            nodes.append(Node(node.operation, tuple(id(t) for t in node.input_tensors),
                              tuple(id(t) for t in node.outputs), node.arguments,
                              tuple(id(t) for t in mask_arguments(node.arguments).values())))
    return LayerGraph(tuple(id(t) for t in model.inputs), tuple(id(t) for t in model.outputs), tuple(nodes))


def mask_arguments(arguments) -> dict:
    """{argument name: KerasTensor} of the masks among a call's arguments (mask=, query_mask=, ...)."""
    kwargs = getattr(arguments, "kwargs", None) or {}
    return {name: value for name, value in kwargs.items()
            if name.endswith("mask") and isinstance(value, keras.KerasTensor)}


def masks_made_by_keras(arguments) -> bool:
    """Whether each mask among a call's arguments was computed by Keras's mask ops (`not_equal`, `any`: what
    Embedding(mask_zero=True) and Masking compute), not given by the caller as an input or a layer's output. (Once a
    model is copied, Keras's own masks are explicit arguments like a caller's: only how they were made tells them
    apart.)"""
    def made_by_ops(mask):
        return not isinstance(keras_internals.made_by(mask), (keras.Layer, type(None)))
    return all(made_by_ops(mask) for mask in mask_arguments(arguments).values())


def data_flow(graph: LayerGraph) -> LayerGraph:
    """The graph without Keras's mask plumbing: each node's inputs without the masks passed to it, and without the
    nodes that only compute masks (nothing but a mask argument needs their outputs)."""
    needed, nodes = set(graph.outputs), []
    for node in reversed(graph.nodes):
        if needed.isdisjoint(node.outputs):
            continue
        data = tuple(tensor for tensor in node.inputs if tensor not in node.masks)
        needed.update(data)
        nodes.append(replace(node, inputs=data))
    return LayerGraph(graph.inputs, graph.outputs, tuple(reversed(nodes)))


def inline_nested_models(graph: LayerGraph, keep=lambda model: False) -> LayerGraph:
    """The graph with each node that calls a Sequential or Functional model (a pretrained base inside a model)
    replaced by that model's own nodes, recursively: its inputs and outputs become the node's tensors, its inner
    tensors are keyed (id of the node, inner key). A model for which `keep(model)` holds stays one node."""
    nodes = []
    for node in graph.nodes:
        inner = layer_graph(node.layer) if isinstance(node.layer, keras.Model) and not keep(node.layer) else None
        if inner is None or len(inner.inputs) != len(node.inputs) or len(inner.outputs) != len(node.outputs):
            nodes.append(node)
            continue
        inner = inline_nested_models(inner, keep)
        outer = {**dict(zip(inner.inputs, node.inputs, strict=True)), **dict(zip(inner.outputs, node.outputs,
                                                                                  strict=True))}

        def key(tensor, node=node, outer=outer):
            return outer.get(tensor, (id(node), tensor))

        nodes += [Node(n.layer, tuple(map(key, n.inputs)), tuple(map(key, n.outputs)), n.arguments,
                       tuple(map(key, n.masks))) for n in inner.nodes]
    return LayerGraph(graph.inputs, graph.outputs, tuple(nodes))


def io_names(model: keras.Model, side: str) -> list[str] | None:
    """The names a dict of the model's `side` ("inputs" or "outputs": targets, losses) is keyed by, in the order
    of model.inputs / model.outputs, as Keras reads such a dict: the keys where the model was built on a dict, else
    the input tensors' names, or the output layers' (output_names). None for a model without symbolic inputs."""
    try:
        tensors = getattr(model, side)
    except (AttributeError, ValueError):
        return None
    struct = getattr(model, f"_{side}_struct", None)
    if isinstance(struct, dict):
        key = {id(t): k for k, t in struct.items()}
        return [key[id(t)] for t in tensors]
    if side == "inputs":
        return [t.name for t in tensors]
    return list(getattr(model, "output_names", None) or [model.layers[-1].name])  # a Sequential: its last layer


def run_graph(graph: LayerGraph, inputs: list, call_node) -> list:
    """Feed `inputs` through the graph; `call_node(node, args, kwargs)` computes a node's outputs."""
    values = dict(zip(graph.inputs, inputs, strict=True))
    for node in graph.nodes:
        args, kwargs = node.call_arguments(values)
        outputs = call_node(node, args, kwargs)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        values.update(zip(node.outputs, outputs, strict=True))
    return [values[i] for i in graph.outputs]
