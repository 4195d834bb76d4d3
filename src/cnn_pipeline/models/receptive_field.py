"""The receptive field of each convolutional layer: how many input pixels one unit sees.

Walks the model's layers in order with the usual recurrence (Araujo et al., "Computing
Receptive Fields of Convolutional Neural Networks", Distill 2019):
    field += (kernel - 1) * dilation * jump;  jump *= stride
where jump is the distance, in input pixels, between neighbouring units of a layer.
Pooling grows the field the same way; an upsampling layer divides the jump by its factor.
Residual networks are followed along their main path (shortcut projections are skipped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keras import layers


@dataclass(frozen=True)
class ReceptiveField:
    layer: str
    kind: str  # "conv" or "pool"
    field_px: float  # side of the square of input pixels one unit depends on
    jump_px: float  # input pixels between two neighbouring units
    output_shape: tuple[int, ...]


def _pair(value: Any) -> int:
    return int(value[0] if isinstance(value, (tuple, list)) else value)


def receptive_fields(model: Any) -> list[ReceptiveField]:
    """One entry per convolution and pooling layer, in the order data flows through them."""
    field, jump = 1.0, 1.0
    input_height = model.input_shape[1]
    rows: list[ReceptiveField] = []
    for layer in model.layers:
        if "shortcut" in layer.name:
            continue
        if isinstance(layer, layers.Resizing):
            # Upsampling by a factor f puts f units per input pixel; bilinear interpolation
            # mixes neighbouring pixels, so each unit sees one more input pixel.
            scale = layer.height / input_height
            field += jump
            jump /= scale
        elif isinstance(layer, layers.Conv2D):
            field += (_pair(layer.kernel_size) - 1) * _pair(layer.dilation_rate) * jump
            jump *= _pair(layer.strides)
            rows.append(
                ReceptiveField(layer.name, "conv", field, jump, tuple(layer.output.shape[1:]))
            )
        elif isinstance(layer, (layers.MaxPooling2D, layers.AveragePooling2D)):
            field += (_pair(layer.pool_size) - 1) * jump
            jump *= _pair(layer.strides)
            rows.append(
                ReceptiveField(layer.name, "pool", field, jump, tuple(layer.output.shape[1:]))
            )
    return rows


def describe(rows: list[ReceptiveField], image_side: int) -> str:
    """A small table for the log, one line per layer."""
    lines = [f"{'layer':<12} {'kind':<5} {'receptive field':>16} {'output':>14}"]
    for row in rows:
        covers = " (whole image)" if row.field_px >= image_side else ""
        field = f"{row.field_px:g}x{row.field_px:g} px"
        lines.append(
            f"{row.layer:<12} {row.kind:<5} {field:>16} {'x'.join(map(str, row.output_shape)):>14}"
            f"{covers}"
        )
    return "\n".join(lines)
