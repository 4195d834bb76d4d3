"""The networks, one module each. `build_model` picks the builder named in params.yaml."""

from __future__ import annotations

import keras
from keras import layers

from cnn_pipeline.config import LeNet5Config, SimpleCnnConfig
from cnn_pipeline.errors import UserError


def input_block(
    input_shape: tuple[int, int, int], min_input_size: int | None
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Raw uint8-range pixels in, floats in [0, 1] out, upsampled if smaller than the model needs.

    Rescaling and resizing live inside the model, so the saved model takes raw images.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale_0_1")(inputs)
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
    config: SimpleCnnConfig | LeNet5Config,
    input_shape: tuple[int, int, int],
    num_classes: int,
) -> keras.Model:
    from cnn_pipeline.models import lenet5, simple_cnn

    try:
        if isinstance(config, SimpleCnnConfig):
            return simple_cnn.make_model(config, input_shape, num_classes)
        return lenet5.make_model(config, input_shape, num_classes)
    except ValueError:
        # Keras's own message is several lines about one layer; the fix is the same for all.
        height, width, _ = input_shape
        raise UserError(
            f"model {config.name} cannot take {height}x{width} images: its convolutions and "
            f"pooling shrink them to nothing; raise model.min_input_size (now "
            f"{config.min_input_size}) so they are upsampled first"
        ) from None
