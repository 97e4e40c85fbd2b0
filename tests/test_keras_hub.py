"""keras_hub backbones at tiny configurations, with a Dense head, fed dict inputs as keras_hub feeds them: the check
ends with a verdict, tape against finite differences and forward mode (their layers are keras_hub's own, with no
formula here). ViT's patching layer does not rebuild from its config, so the check casts the model in place."""
import keras
import keras_hub
import numpy as np
import pytest

from gradcheck import check_gradients

pytestmark = pytest.mark.full  # keras-hub backbones: scripts/test.sh --all

SEQUENCE, VOCABULARY = 6, 30
TINY = {"num_layers": 1, "num_heads": 2, "hidden_dim": 8}


def bert(rng):
    backbone = keras_hub.models.BertBackbone(vocabulary_size=VOCABULARY, intermediate_dim=16,
                                             max_sequence_length=SEQUENCE, **TINY)
    x = {"token_ids": rng.integers(1, VOCABULARY, (2, SEQUENCE)), "segment_ids": np.zeros((2, SEQUENCE), "int32"),
         "padding_mask": np.ones((2, SEQUENCE), "int32")}
    return backbone, backbone.output["pooled_output"], x


def gpt2(rng):
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=VOCABULARY, intermediate_dim=16,
                                             max_sequence_length=SEQUENCE, **TINY)
    x = {"token_ids": rng.integers(1, VOCABULARY, (2, SEQUENCE)), "padding_mask": np.ones((2, SEQUENCE), "int32")}
    return backbone, keras.layers.GlobalAveragePooling1D()(backbone.output), x


def vit(rng):
    backbone = keras_hub.models.ViTBackbone(image_shape=(8, 8, 3), patch_size=4, mlp_dim=16, **TINY)
    return backbone, keras.layers.GlobalAveragePooling1D()(backbone.output), rng.standard_normal((2, 8, 8, 3))


@pytest.mark.parametrize("backbone", [bert, gpt2, vit])
def test_a_keras_hub_backbone_is_checked_and_passes(backbone):
    rng = np.random.default_rng(0)
    model, features, x = backbone(rng)
    head = keras.Model(model.input, keras.layers.Dense(3, activation="softmax")(features))
    report = check_gradients(head, x, np.eye(3)[[0, 2]], fd_entries=4, directions=2)
    assert report.passed, report.failure_message()
    assert set(report.data["directional"]["checks"]) == {"jvp_vs_tape", "tape_vs_finite_differences"}
    assert bool(report.data["cast_in_place"]) == (backbone is vit)
