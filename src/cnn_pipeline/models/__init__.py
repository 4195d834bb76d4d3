"""The networks, one module each, found by their `NETWORK` (discovery.py): `model.name` is
the module's name. `build_model` adds the shared input block (normalisation, training-time
augmentation, upsampling) and the softmax head around the named network's features.

Nothing here or in a network's module imports Keras at import time: validation (the check
stage) imports every module of this folder and stays TensorFlow-free. See docs/extending.md.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cnn_pipeline import config, discovery
from cnn_pipeline.config import AugmentConfig, NetworkConfig
from cnn_pipeline.errors import UserError

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class Network:
    """What a module in models/ declares as `NETWORK`: its config class (a NetworkConfig with
    the module's own keys) and the function that builds its layers."""

    config: type[NetworkConfig]
    # (config, standardised images) -> the features the softmax head reads (any shape: the
    # head flattens nothing, so end with Flatten or global pooling).
    features: Callable[[Any, keras.KerasTensor], keras.KerasTensor]


@functools.cache
def networks() -> dict[str, Network]:
    """Every network, by name (its module's name), sorted."""
    return discovery.declared(sys.modules[__name__], "NETWORK")


def model_config(params: dict[str, Any]) -> NetworkConfig:
    """The model section, validated by the config class of the network it names."""
    section = config.section(params, "model")
    if not isinstance(section, dict):
        return config.validate_section(params, "model", NetworkConfig)  # says what it must be
    if "name" not in section:
        raise UserError("params.yaml: model.name is missing: name one of the files in conf/model/")
    known = networks()
    name = section["name"]
    if not isinstance(name, str) or name not in known:
        raise discovery.unknown_name(
            "model.name", name, list(known), sys.modules[__name__], "NETWORK"
        )
    return config.validate_section(params, "model", known[name].config)


def input_block(
    input_shape: tuple[int, int, int],
    min_input_size: int | None,
    augment: AugmentConfig | None,
    pixel_stats: tuple[Sequence[float], Sequence[float]] | None,
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Raw 0-255 pixels in; standardised, augmented (training only), upsampled features out.

    All of it lives inside the model, so the saved model takes raw images as they are.
    `pixel_stats` is the per-channel (mean, variance) of the training split; without it,
    pixels are scaled to [0, 1].
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="image")
    if pixel_stats is None:
        x = layers.Rescaling(1.0 / 255, name="rescale_0_1")(inputs)
    else:
        mean, variance = pixel_stats
        x = layers.Normalization(mean=list(mean), variance=list(variance), name="normalize")(inputs)
    if augment is not None and augment.enabled:
        # Keras's random layers act in fit() only; evaluate() and predict() pass images through.
        if augment.translate:
            x = layers.RandomTranslation(
                augment.translate, augment.translate, fill_mode="constant", name="random_shift"
            )(x)
        if augment.rotate:
            x = layers.RandomRotation(augment.rotate, fill_mode="constant", name="random_rotation")(
                x
            )
        if augment.zoom:
            x = layers.RandomZoom(augment.zoom, fill_mode="constant", name="random_zoom")(x)
        if augment.horizontal_flip:
            x = layers.RandomFlip("horizontal", name="random_flip")(x)
        if augment.erase:
            # Random erasing (Zhong et al. 2017): with probability `erase`, a rectangle of 2-33%
            # of the image becomes noise, so the network learns from every part of an object.
            # The noise is normal, clipped to [-1, 1]: the spread of standardised pixels.
            x = layers.RandomErasing(
                factor=(augment.erase, augment.erase),
                fill_value=None,
                value_range=(-1.0, 1.0),
                name="random_erasing",
            )(x)
    height, width, _ = input_shape
    if min_input_size is not None and min(height, width) < min_input_size:
        x = layers.Resizing(
            max(height, min_input_size), max(width, min_input_size), name="upsample"
        )(x)
    return inputs, x


def classifier_head(features: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    from keras import layers

    # float32 output even under mixed precision, so softmax and the loss stay numerically stable.
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="class_probs")(
        features
    )


def build_model(
    config: NetworkConfig,
    input_shape: tuple[int, int, int],
    num_classes: int,
    augment: AugmentConfig | None = None,
    pixel_stats: tuple[Sequence[float], Sequence[float]] | None = None,
) -> keras.Model:
    import keras

    network = networks()[config.name]
    if not isinstance(config, network.config):
        raise TypeError(f"{config.name} is built from a {network.config.__name__}")
    inputs, x = input_block(input_shape, config.min_input_size, augment, pixel_stats)
    try:
        features = network.features(config, x)
    except ValueError:
        # Keras's own message is several lines about one layer; the fix is the same for all.
        height, width, _ = input_shape
        raise UserError(
            f"model {config.name} cannot take {height}x{width} images: its convolutions and "
            f"pooling shrink them to nothing; raise model.min_input_size (now "
            f"{config.min_input_size}) so they are upsampled first"
        ) from None
    return keras.Model(inputs, classifier_head(features, num_classes), name=config.name)
