"""The networks: output shapes on every dataset's images, and the published sizes."""

from __future__ import annotations

import numpy as np
import pytest

from cnn_pipeline.config import LeNet5Config, SimpleCnnConfig
from cnn_pipeline.errors import UserError
from cnn_pipeline.models import build_model

SIMPLE_CNN = SimpleCnnConfig(
    name="simple_cnn",
    min_input_size=28,
    filters=[32, 64],
    kernel_size=3,
    padding="valid",
    batch_norm=False,
    dropout_rate=0.5,
)
SIMPLE_CNN_BN = SIMPLE_CNN.model_copy(
    update={"min_input_size": None, "padding": "same", "batch_norm": True}
)
LENET5 = LeNet5Config(
    name="lenet5", min_input_size=28, activation="relu", pooling="max", dropout_rate=0.0
)


@pytest.mark.parametrize(
    "model_config",
    [SIMPLE_CNN, SIMPLE_CNN_BN, LENET5],
    ids=["simple_cnn", "simple_cnn_bn", "lenet5"],
)
@pytest.mark.parametrize("input_shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
def test_output_is_one_probability_per_class(
    model_config: SimpleCnnConfig | LeNet5Config, input_shape: tuple[int, int, int]
) -> None:
    model = build_model(model_config, input_shape, num_classes=10)
    images = np.random.default_rng(0).integers(0, 256, size=(5, *input_shape), dtype=np.uint8)
    probabilities = np.asarray(model.predict(images, verbose=0))
    assert probabilities.shape == (5, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_simple_cnn_matches_the_keras_io_example_size() -> None:
    # keras-io's "Simple MNIST convnet" reports 34,826 trainable parameters.
    assert build_model(SIMPLE_CNN, (28, 28, 1), 10).count_params() == 34_826


def test_lenet5_matches_the_paper_layout() -> None:
    model = build_model(LENET5, (28, 28, 1), 10)
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers}
    assert shapes["c1"] == (28, 28, 6)
    assert shapes["s2"] == (14, 14, 6)
    assert shapes["c3"] == (10, 10, 16)
    assert shapes["s4"] == (5, 5, 16)
    assert shapes["f5"] == (120,)
    assert shapes["f6"] == (84,)
    assert model.count_params() == 61_706


def test_small_images_are_upsampled_inside_the_model() -> None:
    model = build_model(SIMPLE_CNN, (8, 8, 1), 10)
    assert tuple(model.get_layer("upsample").output.shape[1:]) == (28, 28, 1)


def test_too_small_images_without_upsampling_fail_with_advice() -> None:
    no_upsampling = SIMPLE_CNN.model_copy(update={"min_input_size": None})
    with pytest.raises(UserError, match=r"cannot take 8x8 images.*model.min_input_size"):
        build_model(no_upsampling, (8, 8, 1), 10)
