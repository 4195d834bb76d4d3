"""The receptive field of each convolution and pooling layer: how many input pixels one unit sees.

Follows the model's functional graph (each layer from the layers that feed it) with the usual
recurrence (Araujo et al., "Computing Receptive Fields of Convolutional Neural Networks",
Distill 2019):
    field += (kernel - 1) * dilation * jump;  jump *= stride
where jump is the distance, in input pixels, between neighbouring units of a layer.
Convolutions are any of Keras's 2D ones (Conv2D, SeparableConv2D, DepthwiseConv2D); pooling
grows the field the same way; an upsampling layer divides the jump by its factor. Where paths
merge (a residual block's Add, a Concatenate), a unit sees the largest field among its inputs.
Keras is imported inside the functions: models/ stays TensorFlow-free to import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ReceptiveField:
    layer: str
    kind: str  # "conv" or "pool"
    layer_type: str  # the Keras class: Conv2D, SeparableConv2D, MaxPooling2D, ...
    field_px: float  # side of the square of input pixels one unit depends on
    jump_px: float  # input pixels between two neighbouring units
    output_shape: tuple[int, ...]


def _pair(value: Any) -> int:
    return int(value[0] if isinstance(value, (tuple, list)) else value)


def _inputs(layer: Any) -> list[Any]:
    tensors = layer.input
    return list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]


def feeding_layers(model: Any) -> dict[str, list[Any]]:
    """Layer name -> the layers whose outputs it takes (none for the input layer)."""
    producer = {id(layer.output): layer for layer in model.layers}
    return {
        layer.name: [producer[id(t)] for t in _inputs(layer) if id(t) in producer]
        for layer in model.layers
    }


def fed_layers(model: Any) -> dict[str, list[Any]]:
    """Layer name -> the layers that take its output."""
    consumers: dict[str, list[Any]] = {layer.name: [] for layer in model.layers}
    feeding = feeding_layers(model)
    for layer in model.layers:
        for source in feeding[layer.name]:
            consumers[source.name].append(layer)
    return consumers


def _spatial_filter_types() -> tuple[type[Any], ...]:
    from keras import layers

    return (layers.Conv2D, layers.SeparableConv2D, layers.DepthwiseConv2D)


def spatial_filter_layers(model: Any) -> list[Any]:
    """The layers that learn spatial filters (Conv2D, SeparableConv2D, DepthwiseConv2D), in
    the order data flows through them."""
    return [layer for layer in model.layers if isinstance(layer, _spatial_filter_types())]


def receptive_fields(model: Any) -> list[ReceptiveField]:
    """One entry per convolution and pooling layer, in the order data flows through them."""
    from keras import layers

    convolutions = _spatial_filter_types()
    poolings = (layers.MaxPooling2D, layers.AveragePooling2D)
    feeding = feeding_layers(model)
    reach: dict[str, tuple[float, float]] = {}  # layer -> (field, jump) of its output
    rows: list[ReceptiveField] = []
    for layer in model.layers:  # a functional model lists its layers in graph order
        sources = [reach[source.name] for source in feeding[layer.name]]
        field = max((f for f, _ in sources), default=1.0)
        jump = max((j for _, j in sources), default=1.0)
        kind = None
        if isinstance(layer, layers.Resizing):
            # Upsampling by a factor f puts f units per input pixel; bilinear interpolation
            # mixes neighbouring pixels, so each unit sees one more input pixel.
            field += jump
            jump /= layer.height / _inputs(layer)[0].shape[1]
        elif isinstance(layer, convolutions):
            field += (_pair(layer.kernel_size) - 1) * _pair(layer.dilation_rate) * jump
            jump *= _pair(layer.strides)
            kind = "conv"
        elif isinstance(layer, poolings):
            field += (_pair(layer.pool_size) - 1) * jump
            jump *= _pair(layer.strides)
            kind = "pool"
        reach[layer.name] = (field, jump)
        if kind is not None:
            shape = tuple(layer.output.shape[1:])
            rows.append(ReceptiveField(layer.name, kind, type(layer).__name__, field, jump, shape))
    return rows


def describe(rows: list[ReceptiveField], image_side: int) -> str:
    """A small table for the log, one line per layer."""
    width = max([12, *(len(row.layer) for row in rows)])
    lines = [f"{'layer':<{width}} {'type':<16} {'receptive field':>16} {'output':>14}"]
    for row in rows:
        covers = " (whole image)" if row.field_px >= image_side else ""
        field = f"{row.field_px:g}x{row.field_px:g} px"
        lines.append(
            f"{row.layer:<{width}} {row.layer_type:<16} {field:>16} "
            f"{'x'.join(map(str, row.output_shape)):>14}{covers}"
        )
    return "\n".join(lines)
