"""The fastest route to 99% on MNIST on a CPU: the simple_cnn idea, rearranged so that no
arithmetic is spent on values that are thrown away.

- The stem is a 5x5 convolution with stride 2: it learns edge and curve detectors like
  simple_cnn's first layer but evaluates them only at every other pixel, so 28x28 becomes
  12x12 at once, instead of a full 26x26 map that max pooling then shrinks to 13x13.
- Each later block is a 3x3 convolution followed by 2x2 max pooling *before* batch
  normalisation and ReLU. Pooling picks the largest value per channel, and a per-channel
  shift-and-scale with a positive scale and ReLU keep that order, so the block computes
  nearly what conv -> norm -> ReLU -> pool computes, on a quarter of the values.
- Batch normalisation lets training use a large learning rate from the first epoch.
- Optionally (`dense_units`) a hidden fully connected layer, normalised too, combines the
  shapes found anywhere in the image before the softmax: 128 units cost a tenth more
  arithmetic and, with batches of 128, lift one epoch of training above 99%
  (experiment=mnist_one_epoch).

On 28x28 inputs with filters [32, 64] it has 35,626 weights, about keras-io's count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from cnn_pipeline.config import NetworkConfig, PositiveInt
from cnn_pipeline.models import Network

if TYPE_CHECKING:
    import keras


class FastCnnConfig(NetworkConfig):
    filters: Annotated[list[PositiveInt], Field(min_length=1)]
    stem_kernel_size: PositiveInt
    dense_units: PositiveInt | None
    dropout_rate: Annotated[float, Field(ge=0, lt=1)]


def features(config: FastCnnConfig, x: keras.KerasTensor) -> keras.KerasTensor:
    """Strided stem, then convolution + pooling blocks; the flattened features the softmax reads."""
    from keras import layers

    stem_filters, *block_filters = config.filters
    x = layers.Conv2D(
        stem_filters, config.stem_kernel_size, strides=2, use_bias=False, name="stem_conv"
    )(x)
    # momentum 0.9: the statistics used at inference settle within the first hundred steps.
    x = layers.BatchNormalization(momentum=0.9, name="stem_batch_norm")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    for block, filters in enumerate(block_filters, start=1):
        x = layers.Conv2D(filters, 3, use_bias=False, name=f"conv{block}")(x)
        x = layers.MaxPooling2D(pool_size=2, name=f"pool{block}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"batch_norm{block}")(x)
        x = layers.Activation("relu", name=f"relu{block}")(x)
    x = layers.Flatten(name="flatten")(x)
    if config.dense_units:
        x = layers.Dense(config.dense_units, use_bias=False, name="dense")(x)
        x = layers.BatchNormalization(momentum=0.9, name="dense_batch_norm")(x)
        x = layers.Activation("relu", name="dense_relu")(x)
    return layers.Dropout(config.dropout_rate, name="dropout")(x)


NETWORK = Network(FastCnnConfig, features)
