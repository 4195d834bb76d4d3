"""A small ResNet for 32x32 colour images (He et al. 2016, the CIFAR-10 variant).

A 3x3 stem, then stages of residual blocks: two 3x3 convolutions whose output is added to
the block's input (a "shortcut"), so each block learns a correction rather than a whole new
mapping, which lets deep stacks train. Each stage after the first halves the map (stride 2)
and widens it; global average pooling feeds the softmax. filters [16, 32, 64] with 3 blocks
per stage is ResNet-20 (about 0.27 M weights).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from cnn_pipeline.config import NetworkConfig, PositiveInt
from cnn_pipeline.models import Network

if TYPE_CHECKING:
    import keras


class ResNetConfig(NetworkConfig):
    filters: Annotated[list[PositiveInt], Field(min_length=1)]
    blocks_per_stage: PositiveInt
    dropout_rate: Annotated[float, Field(ge=0, lt=1)]


def _conv_bn(x: keras.KerasTensor, filters: int, stride: int, name: str) -> keras.KerasTensor:
    from keras import layers

    x = layers.Conv2D(
        filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    return layers.BatchNormalization(name=f"{name}_bn")(x)


def _residual_block(
    x: keras.KerasTensor, filters: int, stride: int, name: str
) -> keras.KerasTensor:
    from keras import layers

    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        # A 1x1 projection matches the shortcut's shape to the block's output.
        shortcut = layers.Conv2D(
            filters, 1, strides=stride, use_bias=False, name=f"{name}_shortcut_conv"
        )(x)
        shortcut = layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
    y = layers.Activation("relu", name=f"{name}_relu1")(_conv_bn(x, filters, stride, f"{name}_a"))
    y = _conv_bn(y, filters, 1, f"{name}_b")
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_relu2")(y)


def features(config: ResNetConfig, x: keras.KerasTensor) -> keras.KerasTensor:
    from keras import layers

    x = layers.Activation("relu", name="stem_relu")(_conv_bn(x, config.filters[0], 1, "stem"))
    for stage, filters in enumerate(config.filters, start=1):
        for block in range(1, config.blocks_per_stage + 1):
            stride = 2 if stage > 1 and block == 1 else 1
            x = _residual_block(x, filters, stride, f"stage{stage}_block{block}")
    x = layers.GlobalAveragePooling2D(name="global_average_pool")(x)
    return layers.Dropout(config.dropout_rate, name="dropout")(x)


NETWORK = Network(ResNetConfig, features)
