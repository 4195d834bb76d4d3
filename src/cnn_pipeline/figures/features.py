"""What the network sees: first-layer filters and every convolution's activation maps.

"Convolution" means any layer that learns spatial filters (Conv2D, SeparableConv2D,
DepthwiseConv2D: models.receptive_field.spatial_filter_layers), found by following the model's
graph, so residual and separable networks are drawn as plain ones are.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnn_pipeline.figures import pyplot, save_figure
from cnn_pipeline.models.receptive_field import fed_layers, spatial_filter_layers

# A caption line under an image holds this many characters at 7 points in its 1-inch column;
# a longer class name wraps onto further lines.
CAPTION_CHARACTERS = 16


def plot_first_layer_filters(model: Any, path: Path) -> Any:
    """Each filter of the first convolution as a small image (channels averaged); returns
    the saved figure, whose axes hold one image per filter in order.

    Light pixels are positive weights, dark ones negative: oriented light/dark pairs are the
    edge and stroke detectors the network learned. A separable or depthwise first layer shows
    its depthwise filters (one per input channel and multiplier; the 1x1 mixing that follows
    has no spatial extent). A network without any such layer gets a figure that says so.
    """
    from keras import layers

    plt = pyplot()
    spatial = spatial_filter_layers(model)
    if not spatial:
        figure = plt.figure(figsize=(5, 1.2))
        figure.text(
            0.5,
            0.5,
            f"{model.name} has no convolution layer:\nno learned filters to draw",
            ha="center",
            va="center",
        )
        save_figure(figure, path)
        return figure
    first = spatial[0]
    kernel = np.asarray(first.get_weights()[0])
    if isinstance(first, layers.Conv2D):
        filters = kernel.mean(axis=2)  # (height, width, in_channels, filters) -> (h, w, filters)
        what = "filters"
    else:
        # (height, width, in_channels, multiplier) -> (h, w, in_channels * multiplier)
        filters = kernel.reshape(*kernel.shape[:2], -1)
        what = "depthwise filters"
    count = filters.shape[-1]
    columns = min(8, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.1, rows * 1.1 + 0.5))
    limit = float(np.abs(filters).max()) or 1.0
    for index, axis in enumerate(np.atleast_1d(axes).ravel()):
        axis.axis("off")
        if index < count:
            axis.imshow(filters[..., index], cmap="gray", vmin=-limit, vmax=limit)
    figure.suptitle(f"{first.name}: {count} learned {kernel.shape[0]}x{kernel.shape[1]} {what}")
    save_figure(figure, path)
    return figure


def plot_activation_maps(
    model: Any,
    images: np.ndarray,
    path: Path,
    captions: Sequence[str] | None = None,
    maps_per_layer: int = 8,
) -> Any:
    """For each image: the image, then the first maps of every convolution (after ReLU).

    `captions`: one line per image drawn under it (its class, say), wrapped to the column's
    width. Returns the saved figure.
    """
    import keras

    convs = spatial_filter_layers(model)
    if not convs:
        figure = pyplot().figure(figsize=(5, 1.2))
        figure.text(0.5, 0.5, f"{model.name} has no convolution layer: no maps to draw",
                    ha="center", va="center")  # fmt: skip
        save_figure(figure, path)
        return
    # The activation follows the convolution (directly or after batch normalisation): show
    # the output of the layer just before the next pooling or convolution.
    consumers = fed_layers(model)
    shown = [_activated_output(conv, consumers) for conv in convs]
    probe = keras.Model(model.inputs, [layer.output for layer in shown])
    outputs = probe.predict(images, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    plt = pyplot()
    rows = len(images) * len(convs)
    figure, axes = plt.subplots(
        rows, maps_per_layer + 1, figsize=((maps_per_layer + 1) * 1.0, rows * 1.05 + 0.4)
    )
    axes = np.atleast_2d(axes)
    for image_index, image in enumerate(images):
        for layer_index, (conv, activations) in enumerate(zip(convs, outputs, strict=True)):
            row = axes[image_index * len(convs) + layer_index]
            for axis in row:
                axis.axis("off")
            if layer_index == 0:
                row[0].imshow(
                    image.squeeze(),
                    cmap="gray" if image.shape[-1] == 1 else None,
                    interpolation="nearest",
                )
                row[0].set_title(f"image {image_index + 1}", fontsize=7)
                if captions is not None:
                    # Below the image: above it, a long caption would reach the row before.
                    row[0].text(
                        0.5,
                        -0.06,
                        textwrap.fill(
                            captions[image_index], CAPTION_CHARACTERS, break_on_hyphens=False
                        ),
                        transform=row[0].transAxes,
                        fontsize=7,
                        horizontalalignment="center",
                        verticalalignment="top",
                    )
            maps = activations[image_index]
            for map_index in range(min(maps_per_layer, maps.shape[-1])):
                row[map_index + 1].imshow(maps[..., map_index], cmap="viridis")
            row[1].set_title(
                f"{conv.name} ({maps.shape[0]}x{maps.shape[1]})", fontsize=7, loc="left"
            )
    figure.suptitle("activation maps: bright = the filter responded strongly", fontsize=9)
    save_figure(figure, path)
    return figure


def _activated_output(conv: Any, consumers: dict[str, list[Any]]) -> Any:
    """The last of the normalisation and activation layers that alone follow `conv`."""
    from keras import layers

    chosen = conv
    while len(following := consumers[chosen.name]) == 1 and isinstance(
        following[0], (layers.BatchNormalization, layers.Activation, layers.ReLU)
    ):
        chosen = following[0]
    return chosen
