"""A model's trainable parameters by name: "<layer>/<weight>" (e.g. "conv1/kernel"), or Keras's variable paths where
that is not unique (nested or shared weights). Every report, mask and mutation names a tensor this way."""
import keras


def parameters(model: keras.Model) -> dict[str, keras.Variable]:
    """The trainable variables by "<layer>/<weight>" name, in layer order. A copy made by `with_dtype` has the
    names of its model: a subclassed model's copy builds its unnamed layers anew, and Keras numbers them anew."""
    named = {f"{layer.name}/{v.name}": v for layer in model.layers for v in layer.trainable_weights}
    if len(named) != len(model.trainable_variables) or \
            {id(v) for v in named.values()} != {id(v) for v in model.trainable_variables}:
        named = {v.path: v for v in model.trainable_variables}  # nested or shared weights: Keras's own paths
    names = getattr(model, "_names_of_the_copied_parameters", None)
    return dict(zip(names, named.values(), strict=True)) if names else named
