"""LeNet-5 (LeCun, Bottou, Bengio and Haffner, 1998), for 28x28 inputs.

The paper centred 28x28 digits in a 32x32 field before its first 5x5 convolution; "same"
padding on that convolution gives the same 28x28 feature maps. The rest follows the paper:
C1 6 maps, S2 2x2 pooling, C3 16 maps, S4 pooling, fully connected 120 and 84, then 10 classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from cnn_pipeline.config import NetworkConfig
from cnn_pipeline.models import Network

if TYPE_CHECKING:
    import keras


class LeNet5Config(NetworkConfig):
    activation: Literal["relu", "tanh"]
    pooling: Literal["max", "average"]
    dropout_rate: Annotated[float, Field(ge=0, lt=1)]


def features(config: LeNet5Config, x: keras.KerasTensor) -> keras.KerasTensor:
    """C1 to F6: what the softmax layer (the paper's output layer) reads."""
    from keras import layers

    pooling = layers.MaxPooling2D if config.pooling == "max" else layers.AveragePooling2D
    x = layers.Conv2D(6, 5, padding="same", activation=config.activation, name="c1")(x)
    x = pooling(pool_size=2, name="s2")(x)
    x = layers.Conv2D(16, 5, activation=config.activation, name="c3")(x)
    x = pooling(pool_size=2, name="s4")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(120, activation=config.activation, name="f5")(x)
    x = layers.Dense(84, activation=config.activation, name="f6")(x)
    return layers.Dropout(config.dropout_rate, name="dropout")(x)


NETWORK = Network(LeNet5Config, features)
