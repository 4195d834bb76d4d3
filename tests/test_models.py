"""The networks: every registered one builds, trains and is drawn (a contract over the
registry, naming none); then each one's published layout and size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from PIL import Image

from cnn_pipeline import models
from cnn_pipeline.config import AugmentConfig, NetworkConfig
from cnn_pipeline.errors import UserError
from cnn_pipeline.figures.features import plot_activation_maps, plot_first_layer_filters
from cnn_pipeline.models import build_model
from cnn_pipeline.models.fast_cnn import FastCnnConfig
from cnn_pipeline.models.lenet5 import LeNet5Config
from cnn_pipeline.models.receptive_field import receptive_fields, spatial_filter_layers
from cnn_pipeline.models.resnet import ResNetConfig
from cnn_pipeline.models.simple_cnn import SimpleCnnConfig

from conftest import REPO_ROOT

SIMPLE_CNN = SimpleCnnConfig(
    name="simple_cnn",
    min_input_size=28,
    filters=[32, 64],
    convs_per_block=1,
    kernel_size=3,
    padding="valid",
    batch_norm=False,
    dense_units=None,
    dropout_rate=0.5,
)
SIMPLE_CNN_BN = SIMPLE_CNN.model_copy(
    update={"min_input_size": None, "padding": "same", "batch_norm": True}
)
FAST_CNN = FastCnnConfig(
    name="fast_cnn",
    min_input_size=28,
    filters=[32, 64],
    stem_kernel_size=5,
    dense_units=None,
    dropout_rate=0.0,
)
RESNET = ResNetConfig(
    name="resnet", min_input_size=None, filters=[16, 32, 64], blocks_per_stage=3, dropout_rate=0.0
)
LENET5 = LeNet5Config(
    name="lenet5", min_input_size=28, activation="relu", pooling="max", dropout_rate=0.0
)


def model_presets() -> dict[str, NetworkConfig]:
    """conf/model/NAME.yaml -> its validated config, for every preset."""
    return {
        path.stem: models.model_config({"model": yaml.safe_load(path.read_text())})
        for path in sorted((REPO_ROOT / "conf" / "model").glob("*.yaml"))
    }


def test_every_network_has_a_preset_and_every_preset_a_network() -> None:
    networks = models.networks()
    assert networks, "no module in src/cnn_pipeline/models/ declares NETWORK"
    named = {preset.name for preset in model_presets().values()}
    assert named == set(networks), "each network needs a conf/model/ file (docs/extending.md)"


def test_validation_imports_no_keras_and_every_network_module_is_light() -> None:
    """The check stage validates in about a second: importing models/ and datasets/ (every
    module, as the registries do) must not import Keras or TensorFlow."""
    script = (
        "import sys\n"
        "from cnn_pipeline import datasets, models\n"
        "models.networks(); datasets.all_datasets()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def _not_blank(path: Path) -> bool:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"))
    return len(np.unique(pixels)) > 10


@pytest.mark.parametrize("preset", sorted(model_presets()))
@pytest.mark.parametrize("input_shape", [(8, 8, 1), (32, 32, 3)])
def test_every_network_builds_trains_a_step_and_is_drawn(
    preset: str, input_shape: tuple[int, int, int], tmp_path: Path
) -> None:
    model = build_model(model_presets()[preset], input_shape, num_classes=3)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, *input_shape), dtype=np.uint8)
    labels = keras.utils.to_categorical(np.arange(4) % 3, 3)
    # One eager step: tracing a compiled training step would cost more than the whole test.
    model.compile(optimizer="adam", loss="categorical_crossentropy", run_eagerly=True)
    model.train_on_batch(images, labels)
    probabilities = np.asarray(model(images, training=False))
    assert probabilities.shape == (4, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # Every layer that learns spatial filters has its receptive field.
    fields = {row.layer for row in receptive_fields(model)}
    assert {layer.name for layer in spatial_filter_layers(model)} <= fields
    plot_first_layer_filters(model, tmp_path / "filters.png")
    plot_activation_maps(model, images[:1], tmp_path / "activations.png", maps_per_layer=2)
    assert _not_blank(tmp_path / "filters.png")
    assert _not_blank(tmp_path / "activations.png")


def test_output_is_one_probability_per_class_on_28x28() -> None:
    for config in model_presets().values():
        model = build_model(config, (28, 28, 1), num_classes=10)
        images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28, 1), dtype=np.uint8)
        probabilities = np.asarray(model(images, training=False))
        assert probabilities.shape == (5, 10)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_simple_cnn_matches_the_keras_io_example_size() -> None:
    # keras-io's "Simple MNIST convnet" reports 34,826 trainable parameters.
    assert build_model(SIMPLE_CNN, (28, 28, 1), 10).count_params() == 34_826


def test_simple_cnn_stacks_convolutions_in_each_block_before_pooling() -> None:
    vgg_style = SIMPLE_CNN.model_copy(update={"convs_per_block": 2})
    model = build_model(vgg_style, (28, 28, 1), 10)
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers}
    assert shapes["conv1a"] == (26, 26, 32)
    assert shapes["conv1b"] == (24, 24, 32)  # two 3x3 convolutions see 5x5 pixels
    assert shapes["pool1"] == (12, 12, 32)
    assert shapes["conv2b"] == (8, 8, 64)
    assert shapes["pool2"] == (4, 4, 64)
    # conv1b (3*3*32*32 + 32) and conv2b (3*3*64*64 + 64) are the new weights; the softmax
    # reads 4*4*64 features instead of 5*5*64.
    extra = (9 * 32 * 32 + 32) + (9 * 64 * 64 + 64) - (25 - 16) * 64 * 10
    assert model.count_params() == 34_826 + extra


def test_simple_cnn_can_put_a_hidden_fully_connected_layer_before_the_softmax() -> None:
    model = build_model(SIMPLE_CNN.model_copy(update={"dense_units": 128}), (28, 28, 1), 10)
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers}
    assert shapes["flatten"] == (1600,)
    assert shapes["dense"] == (128,)
    softmax_on_features = 1600 * 10 + 10
    hidden_then_softmax = (1600 * 128 + 128) + (128 * 10 + 10)
    assert model.count_params() == 34_826 - softmax_on_features + hidden_then_softmax


def test_fast_cnn_strides_its_stem_and_pools_before_normalising() -> None:
    model = build_model(FAST_CNN, (28, 28, 1), 10)
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers}
    assert shapes["stem_conv"] == (12, 12, 32)  # 5x5 filters at every other pixel
    assert shapes["conv1"] == (10, 10, 64)
    assert shapes["pool1"] == (5, 5, 64)
    names = [layer.name for layer in model.layers]
    assert names.index("pool1") < names.index("batch_norm1") < names.index("relu1")
    assert model.count_params() == 35_626  # keras-io's size, within 2%


def test_fast_cnn_can_put_a_normalised_hidden_layer_before_the_softmax() -> None:
    model = build_model(FAST_CNN.model_copy(update={"dense_units": 256}), (28, 28, 1), 10)
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers}
    assert shapes["flatten"] == (1600,)
    assert shapes["dense"] == shapes["dense_relu"] == (256,)
    names = [layer.name for layer in model.layers]
    assert names.index("dense") < names.index("dense_batch_norm") < names.index("dense_relu")
    softmax_on_features = 1600 * 10 + 10
    # No bias in the hidden layer (batch norm's shift replaces it); batch norm keeps 4 numbers
    # per unit (scale, shift, and the running mean and variance).
    hidden_then_softmax = 1600 * 256 + 4 * 256 + (256 * 10 + 10)
    assert model.count_params() == 35_626 - softmax_on_features + hidden_then_softmax


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


def test_resnet20_size_and_downsampling() -> None:
    model = build_model(RESNET, (32, 32, 3), 10)
    # ResNet-20 for CIFAR-10 has about 0.27 M weights (He et al. 2016, table 6).
    assert 260_000 < model.count_params() < 280_000
    assert tuple(model.get_layer("stage3_block3_relu2").output.shape[1:]) == (8, 8, 64)


def test_augmentation_acts_in_training_only() -> None:
    augment = AugmentConfig(translate=0.2, rotate=0.1, zoom=0.1, horizontal_flip=True, erase=0.5)
    model = build_model(SIMPLE_CNN_BN, (28, 28, 1), 10, augment=augment)
    images = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28, 1)).astype("float32")
    inference = [np.asarray(model(images, training=False)) for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    augmenting = model.get_layer("random_shift")
    shifted = [np.asarray(augmenting(images, training=True)) for _ in range(2)]
    assert not np.array_equal(shifted[0], shifted[1])
    assert {
        "random_shift",
        "random_rotation",
        "random_zoom",
        "random_flip",
        "random_erasing",
    } <= {layer.name for layer in model.layers}


def test_random_erasing_replaces_one_rectangle_of_some_images() -> None:
    augment = AugmentConfig(translate=0, rotate=0, zoom=0, horizontal_flip=False, erase=0.5)
    model = build_model(SIMPLE_CNN_BN, (28, 28, 1), 10, augment=augment)
    erasing = model.get_layer("random_erasing")
    images = np.full((200, 28, 28, 1), 5.0, dtype="float32")  # outside the noise's [-1, 1]
    erased = np.asarray(erasing(images, training=True)) != 5.0
    touched = erased.any(axis=(1, 2, 3))
    assert 0.35 < touched.mean() < 0.65  # about half the images, as erase=0.5 says
    for mask in erased[touched, ..., 0]:
        rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        # One filled rectangle (the noise lies in [-1, 1]: no erased pixel keeps 5.0) of about
        # 2-33% of the image, whole pixels.
        assert mask[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1].all()
        assert 0.01 <= mask.mean() <= 0.4
    np.testing.assert_array_equal(np.asarray(erasing(images, training=False)), images)


def test_normalisation_uses_the_given_training_statistics() -> None:
    model = build_model(SIMPLE_CNN_BN, (8, 8, 3), 10, pixel_stats=([10, 20, 30], [4, 9, 16]))
    normalize = model.get_layer("normalize")
    pixel = np.array([[[[12.0, 26.0, 42.0]]]], dtype="float32")  # (1, 1, 1, 3)
    np.testing.assert_allclose(np.asarray(normalize(pixel)), [[[[1.0, 2.0, 3.0]]]], rtol=1e-5)
