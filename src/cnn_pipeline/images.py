"""Image files as the uint8 arrays the models take, and which way round their ink is.

One reader for every image that meets a model: preprocess reads an image folder's training
and test images with `read_image`, and `cnn-pipeline predict` reads new images with the
same function, so a picture is converted and resized exactly as the training images were.
Pillow is imported only inside `read_image`: preprocess of the bundled datasets never needs it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np

# Which way round the training images are, measured by preprocess over the training split:
# "light_on_dark" (digits, MNIST: light strokes on black), "dark_on_light" (ink on paper), or
# "mixed" (photos: no rule). predict inverts a grayscale image whose own polarity is the
# opposite of a clear training polarity.
Polarity = Literal["light_on_dark", "dark_on_light", "mixed"]
POLARITIES: tuple[Polarity, ...] = ("light_on_dark", "dark_on_light", "mixed")
# An image whose mean pixel is below this is mostly dark: light ink on a dark background.
DARK_MEAN = 127.5
# A training split is one polarity when at least this share of its images is.
CLEAR_POLARITY_SHARE = 0.9


class UnreadableImage(ValueError):
    """A file that is not an image this reader can use; the message says why."""


def read_image(path: Path, height: int, width: int, channels: int) -> np.ndarray:
    """Read `path` as a uint8 (height, width, channels) array: first frame of a GIF,
    converted to grayscale (channels=1) or RGB (3), resized bilinearly.

    Bilinear is what training has always used, so models trained before this function was
    shared see the same pixels at predict time as in training (Pillow's resize filters the
    whole source area when it shrinks, so large photos are not aliased).
    Raises UnreadableImage for a missing, truncated or non-image file, and for an image with
    more pixels than Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS): Pillow only
    warns between that limit and twice it, and a warning would let a huge file be decoded.
    """
    from PIL import Image

    if channels not in (1, 3):
        raise ValueError(f"channels = {channels} is invalid: give 1 (grayscale) or 3 (RGB)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                opened.seek(0)  # the first frame of an animated GIF
                image = opened.convert("L" if channels == 1 else "RGB")
            image = image.resize((width, height), Image.Resampling.BILINEAR)
    except FileNotFoundError:
        raise UnreadableImage("no such file") from None
    except (
        OSError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as error:
        raise UnreadableImage(str(error) or type(error).__name__) from None
    return np.asarray(image, dtype=np.uint8).reshape(height, width, channels)


def is_light_on_dark(image: np.ndarray) -> bool:
    """Whether one image (any shape, 0-255) is mostly dark, so its strokes are light."""
    return float(np.mean(image)) < DARK_MEAN


def polarity_of(images: np.ndarray) -> Polarity:
    """The polarity of a uint8 image array (N, height, width, channels): one direction
    when at least CLEAR_POLARITY_SHARE of the images go that way, else "mixed"."""
    if len(images) == 0:
        return "mixed"
    # Per-image means, a batch at a time: no float copy of all images at once.
    means = np.empty(len(images))
    for start in range(0, len(images), 4096):
        batch = images[start : start + 4096]
        means[start : start + len(batch)] = batch.reshape(len(batch), -1).mean(axis=1)
    mostly_dark = int(np.count_nonzero(means < DARK_MEAN))
    if mostly_dark >= CLEAR_POLARITY_SHARE * len(images):
        return "light_on_dark"
    if len(images) - mostly_dark >= CLEAR_POLARITY_SHARE * len(images):
        return "dark_on_light"
    return "mixed"


def should_invert(image: np.ndarray, trained_on: Polarity | None) -> bool:
    """Whether to invert a grayscale image before a model trained on `trained_on` images
    sees it: when the image's polarity is the opposite of the training data's. Models
    trained before polarity was recorded (None) keep the old rule, made for digits: invert
    a mostly light image."""
    light_on_dark = is_light_on_dark(image)
    if trained_on is None or trained_on == "light_on_dark":
        return not light_on_dark
    if trained_on == "dark_on_light":
        return light_on_dark
    return False
