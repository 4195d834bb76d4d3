"""The networks, one module each. `build_model` adds the shared input block (normalisation,
training-time augmentation, upsampling) and picks the builder named in params.yaml."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from cnn_pipeline.config import (
    AnyModelConfig,
    AugmentConfig,
    FastCnnConfig,
    LeNet5Config,
    ResNetConfig,
    SimpleCnnConfig,
)
from cnn_pipeline.errors import UserError


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
    # float32 output even under mixed precision, so softmax and the loss stay numerically stable.
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="class_probs")(
        features
    )


def build_model(
    config: AnyModelConfig,
    input_shape: tuple[int, int, int],
    num_classes: int,
    augment: AugmentConfig | None = None,
    pixel_stats: tuple[Sequence[float], Sequence[float]] | None = None,
) -> keras.Model:
    from cnn_pipeline.models import fast_cnn, lenet5, resnet, simple_cnn

    inputs, x = input_block(input_shape, config.min_input_size, augment, pixel_stats)
    try:
        if isinstance(config, SimpleCnnConfig):
            features = simple_cnn.features(config, x)
        elif isinstance(config, FastCnnConfig):
            features = fast_cnn.features(config, x)
        elif isinstance(config, LeNet5Config):
            features = lenet5.features(config, x)
        elif isinstance(config, ResNetConfig):
            features = resnet.features(config, x)
    except ValueError:
        # Keras's own message is several lines about one layer; the fix is the same for all.
        height, width, _ = input_shape
        raise UserError(
            f"model {config.name} cannot take {height}x{width} images: its convolutions and "
            f"pooling shrink them to nothing; raise model.min_input_size (now "
            f"{config.min_input_size}) so they are upsampled first"
        ) from None
    return keras.Model(inputs, classifier_head(features, num_classes), name=config.name)
