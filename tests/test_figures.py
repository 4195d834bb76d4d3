"""Figures and receptive fields, calibration, mistakes, and the figures they draw."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from cnn_pipeline.figures import pyplot, save_figure
from cnn_pipeline.figures.calibration import plot_reliability, reliability
from cnn_pipeline.figures.features import plot_activation_maps, plot_first_layer_filters
from cnn_pipeline.figures.mistakes import most_confident_mistakes, plot_mistakes
from cnn_pipeline.models import build_model
from cnn_pipeline.models.receptive_field import describe, receptive_fields

from test_models import LENET5, SIMPLE_CNN, SIMPLE_CNN_BN

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fields_by_layer(model_config: object, input_shape: tuple[int, int, int]) -> dict[str, float]:
    model = build_model(model_config, input_shape, 10)  # type: ignore[arg-type]
    return {row.layer: row.field_px for row in receptive_fields(model)}


def test_lenet5_receptive_fields_grow_layer_by_layer() -> None:
    # 5x5 conv: 5; 2x2 pool: +1; 5x5 conv at jump 2: +8; 2x2 pool at jump 2: +2.
    assert fields_by_layer(LENET5, (28, 28, 1)) == {"c1": 5, "s2": 6, "c3": 14, "s4": 16}


def test_simple_cnn_receptive_fields() -> None:
    assert fields_by_layer(SIMPLE_CNN, (28, 28, 1)) == {
        "conv1": 3,
        "pool1": 4,
        "conv2": 8,
        "pool2": 10,
    }


def test_upsampling_shrinks_the_field_in_input_pixels() -> None:
    native = fields_by_layer(SIMPLE_CNN_BN, (8, 8, 1))
    upsampled = fields_by_layer(SIMPLE_CNN, (8, 8, 1))  # 8x8 upsampled to 28x28 first
    assert native["conv1"] == 3
    assert upsampled["conv1"] == pytest.approx(1 + 1 + 2 * 8 / 28)
    assert upsampled["pool2"] < native["pool2"]


def depthwise_residual_model() -> keras.Model:
    """No Conv2D at all: a depthwise stem, a residual block of separable convolutions whose
    shortcut skips them, pooling."""
    layers = keras.layers
    inputs = keras.Input((16, 16, 1), name="image")
    x = layers.DepthwiseConv2D(3, depth_multiplier=4, name="stem_depthwise")(inputs)  # 14x14x4
    y = layers.SeparableConv2D(4, 3, padding="same", name="block_sep1")(x)
    y = layers.ReLU(name="block_relu")(y)
    y = layers.SeparableConv2D(4, 3, padding="same", dilation_rate=2, name="block_sep2")(y)
    x = layers.Add(name="block_add")([x, y])
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    return keras.Model(inputs, layers.Dense(3, activation="softmax")(x))


def test_receptive_fields_follow_the_graph_through_separable_and_residual_layers() -> None:
    fields = {row.layer: (row.field_px, row.layer_type) for row in receptive_fields(
        depthwise_residual_model()
    )}  # fmt: skip
    assert fields == {
        "stem_depthwise": (3, "DepthwiseConv2D"),
        "block_sep1": (5, "SeparableConv2D"),
        # A 3x3 kernel dilated by 2 spans 5 pixels: +4.
        "block_sep2": (9, "SeparableConv2D"),
        # The Add sees the larger field of its two inputs (the shortcut's is 3), then +1.
        "pool": (10, "MaxPooling2D"),
    }


def test_a_network_without_conv2d_gets_its_filters_and_maps(tmp_path: Path) -> None:
    model = depthwise_residual_model()
    figure = plot_first_layer_filters(model, tmp_path / "filters.png")
    # The depthwise stem: 1 input channel x 4 multipliers = 4 filters of 3x3.
    assert len([axis for axis in figure.axes if axis.images]) == 4
    assert figure.get_suptitle() == "stem_depthwise: 4 learned 3x3 depthwise filters"
    images = np.random.default_rng(0).integers(0, 256, size=(1, 16, 16, 1), dtype=np.uint8)
    plot_activation_maps(model, images, tmp_path / "activations.png", maps_per_layer=2)
    assert_not_blank(decoded(tmp_path / "activations.png"))


def test_a_network_without_any_convolution_says_so(tmp_path: Path) -> None:
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(x), name="dense_only")
    figure = plot_first_layer_filters(model, tmp_path / "filters.png")
    assert "no convolution layer" in figure.texts[0].get_text()
    plot_activation_maps(model, np.zeros((1, 8, 8, 1), np.uint8), tmp_path / "maps.png")
    assert decoded(tmp_path / "filters.png").size and decoded(tmp_path / "maps.png").size
    assert receptive_fields(model) == []


def test_describe_marks_layers_that_see_the_whole_image() -> None:
    model = build_model(SIMPLE_CNN_BN, (8, 8, 1), 10)
    table = describe(receptive_fields(model), image_side=8).splitlines()
    assert table[1].startswith("conv1") and "(whole image)" not in table[1]
    assert "(whole image)" in table[-1]


def test_expected_calibration_error_by_hand() -> None:
    # Two bins. Low bin: confidences 0.3 and 0.4, one right: accuracy 0.5, confidence 0.35.
    # High bin: 0.9 and 0.8, both right: accuracy 1.0, confidence 0.85.
    probabilities = np.array(
        [[0.3, 0.2, 0.25, 0.25], [0.4, 0.2, 0.2, 0.2], [0.9, 0.1, 0, 0], [0.1, 0.8, 0.1, 0]]
    )
    labels = np.array([0, 1, 0, 1])
    result = reliability(probabilities, labels, bins=2)
    assert result.counts.tolist() == [2, 2]
    np.testing.assert_allclose(result.accuracy, [0.5, 1.0])
    np.testing.assert_allclose(result.confidence, [0.35, 0.85])
    # ECE = 2/4 * |0.5 - 0.35| + 2/4 * |1.0 - 0.85| = 0.15
    assert result.expected_calibration_error == pytest.approx(0.15)


def test_mistakes_are_sorted_by_confidence_of_the_wrong_class() -> None:
    probabilities = np.array([[0.6, 0.4], [0.1, 0.9], [0.3, 0.7], [0.8, 0.2]])
    labels = np.array([1, 0, 0, 0])  # image 3 is right; 1 (0.9), 2 (0.7), 0 (0.6) are wrong
    assert most_confident_mistakes(probabilities, labels, limit=10).tolist() == [1, 2, 0]
    assert most_confident_mistakes(probabilities, labels, limit=2).tolist() == [1, 2]


def decoded(path: Path) -> np.ndarray:
    """A PNG file's pixels as (height, width, 3) uint8, after checking it is a PNG."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def assert_not_blank(pixels: np.ndarray) -> None:
    """More than a background and some text: a drawn figure has many colours or greys."""
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 30, f"only {len(colours)} colours: the figure looks blank"
    drawn = np.any(pixels < 245, axis=-1).mean()  # anything but white
    assert drawn > 0.05, f"only {drawn:.1%} of the pixels are drawn on"


def test_filter_grid_shows_one_tile_per_filter_with_that_filters_weights(tmp_path: Path) -> None:
    # 12 filters on a grid of 8 columns: 2 rows, the last 4 places left empty.
    inputs = keras.Input((8, 8, 1))
    features = keras.layers.Conv2D(12, 3, name="edges")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(features)))
    kernel = model.get_layer("edges").get_weights()[0][:, :, 0, :]  # (3, 3, 12)

    figure = plot_first_layer_filters(model, tmp_path / "filters.png")
    pixels = decoded(tmp_path / "filters.png").astype(float)

    assert pixels.shape[:2] == (round(figure.bbox.height), round(figure.bbox.width))
    tiles = [axis.images[0] for axis in figure.axes if axis.images]
    assert len(tiles) == 12
    for index, tile in enumerate(tiles):
        # The tile's pixels in the PNG (y counts up in matplotlib, down in the image).
        box = tile.get_window_extent()
        top, bottom = round(pixels.shape[0] - box.y1) + 2, round(pixels.shape[0] - box.y0) - 2
        crop = pixels[top:bottom, round(box.x0) + 2 : round(box.x1) - 2, 0]
        assert crop.std() > 10, f"tile {index} is blank"
        # Averaged over each of its 3x3 cells, the tile is the filter: light = positive.
        cells = np.asarray(
            Image.fromarray(crop.astype(np.uint8)).resize((3, 3), Image.Resampling.BOX), float
        )
        correlation = np.corrcoef(cells.ravel(), kernel[..., index].ravel())[0, 1]
        assert correlation > 0.95, f"tile {index} does not show filter {index}"
    for axis in figure.axes[12:]:
        box = axis.get_window_extent()
        empty = pixels[
            round(pixels.shape[0] - box.y1) : round(pixels.shape[0] - box.y0),
            round(box.x0) : round(box.x1),
        ]
        assert empty.min() == 255, "a grid place without a filter is drawn on"


def test_report_figures_are_drawn(tmp_path: Path) -> None:
    model = build_model(SIMPLE_CNN_BN, (8, 8, 1), 10)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 8, 8, 1), dtype=np.uint8)
    labels = np.arange(6) % 10
    probabilities = np.asarray(model.predict(images, verbose=0))
    plot_activation_maps(model, images[:2], tmp_path / "activations.png")
    misclassified = plot_mistakes(
        images, labels, probabilities, tuple("0123456789"), 4, tmp_path / "mistakes.png"
    )
    assert misclassified == int(np.sum(probabilities.argmax(axis=1) != labels))
    plot_reliability(reliability(probabilities, labels, 5), "test", tmp_path / "calibration.png")
    for name in ("activations", "mistakes", "calibration"):
        assert_not_blank(decoded(tmp_path / f"{name}.png"))
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "activations.png",
        "calibration.png",
        "mistakes.png",
    ]


def test_a_blank_figure_is_recognised_as_blank(tmp_path: Path) -> None:
    figure = pyplot().figure(figsize=(4, 3))
    figure.suptitle("only a title")
    save_figure(figure, tmp_path / "blank.png")
    with pytest.raises(AssertionError, match=r"looks blank|drawn on"):
        assert_not_blank(decoded(tmp_path / "blank.png"))


# Class names in every figure, long ones included ----------------------------------------

# Fashion-MNIST's names, three of them made long enough to wrap: every figure must show each
# name whole and apart from its neighbours.
LONG_CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover with a hood and a zip",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt with long sleeves and buttons",
    "Sneaker",
    "Bag",
    "Ankle boot, leather, with laces",
)


def kept(module: object, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The figures `module` saves, kept open for their artists to be measured."""
    figures: list[object] = []
    real = save_figure

    def save_and_keep(figure: object, path: Path) -> None:
        real(figure, path)
        # Closing the figure took its canvas away: a new one draws it as the PNG was drawn.
        FigureCanvasAgg(figure).draw()
        figures.append(figure)

    monkeypatch.setattr(module, "save_figure", save_and_keep)
    return figures


def boxes(artists: list[object], figure: object) -> list[object]:
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    return [artist.get_window_extent(renderer) for artist in artists]  # type: ignore[attr-defined]


def assert_apart(first: list[object], second: list[object] | None = None) -> None:
    """No box of `first` overlaps another box of `first` (or, given `second`, any of it)."""
    for index, box in enumerate(first):
        others = second if second is not None else first[index + 1 :]
        for other in others:
            assert not box.overlaps(other), f"{box} overlaps {other}"  # type: ignore[attr-defined]


def assert_inside(inner: list[object], figure: object) -> None:
    outer = figure.bbox  # type: ignore[attr-defined]
    for box in inner:
        assert outer.x0 - 1 <= box.x0 and box.x1 <= outer.x1 + 1, f"{box} leaves the figure"  # type: ignore[attr-defined]
        assert outer.y0 - 1 <= box.y0 and box.y1 <= outer.y1 + 1, f"{box} leaves the figure"  # type: ignore[attr-defined]


def unwrapped(text: str) -> str:
    return " ".join(text.split())


def test_mistakes_show_whole_class_names_apart_on_large_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cnn_pipeline.figures import mistakes

    figures = kept(mistakes, monkeypatch)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(60, 28, 28, 1), dtype=np.uint8)
    labels = np.arange(60) % 10
    probabilities = rng.dirichlet(np.ones(10) * 0.3, size=60)
    plot_mistakes(images, labels, probabilities, LONG_CLASS_NAMES, 25, tmp_path / "m.png")
    (figure,) = figures

    drawn = [axis for axis in figure.axes if axis.images]  # type: ignore[attr-defined]
    predicted = probabilities.argmax(axis=1)
    expected = [
        f"true {LONG_CLASS_NAMES[labels[i]]} predicted {LONG_CLASS_NAMES[predicted[i]]} "
        f"({probabilities[i, predicted[i]]:.0%})"
        for i in most_confident_mistakes(probabilities, labels, 25)
    ]
    assert [unwrapped(axis.title.get_text()) for axis in drawn] == expected
    assert any("\n" in axis.title.get_text() for axis in drawn)  # long names wrapped
    titles = boxes([axis.title for axis in drawn], figure)
    pictures = boxes([axis.images[0] for axis in drawn], figure)
    assert_apart(titles)
    assert_apart(titles, pictures)
    assert_inside(titles, figure)
    for picture in pictures:
        # At least 4x4 screen pixels per image pixel: readable at 28x28.
        assert picture.width >= 4 * 28 and picture.height >= 4 * 28  # type: ignore[attr-defined]


def test_confusion_and_per_class_figures_name_every_class_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cnn_pipeline.figures import confusion as confusion_figures

    figures = kept(confusion_figures, monkeypatch)
    # Mostly right, with Shirt (class 6) most often taken for T-shirt/top (class 0).
    counts = np.eye(10, dtype=int) * 900 + 10
    counts[6, 0] = 150
    confusion_figures.plot_confusion_matrix(
        counts, LONG_CLASS_NAMES, False, "test", tmp_path / "confusion.png"
    )
    f1_scores = [0.9] * 10
    f1_scores[6] = 0.7
    confusion_figures.plot_per_class_f1(
        f1_scores, counts, LONG_CLASS_NAMES, tmp_path / "per_class.png"
    )
    matrix, per_class = figures

    axes = matrix.axes[0]  # type: ignore[attr-defined]
    for labels in (axes.get_xticklabels(), axes.get_yticklabels()):
        assert [label.get_text() for label in labels] == list(LONG_CLASS_NAMES)
        assert_apart(boxes(labels, matrix))
        assert_inside(boxes(labels, matrix), matrix)

    axes = per_class.axes[0]  # type: ignore[attr-defined]
    names = axes.get_yticklabels()
    assert [label.get_text() for label in names] == list(LONG_CLASS_NAMES)
    assert [round(bar.get_width(), 2) for bar in axes.patches] == f1_scores
    notes = [text.get_text() for text in axes.texts]
    share = 10 / counts[0].sum()  # of each class's images, for each wrong class but Shirt's
    shirts = counts[6].sum()
    assert (
        notes[6] == f"0.70  taken for T-shirt/top ({150 / shirts:.1%}), Trouser ({10 / shirts:.1%})"
    )
    assert notes[0] == f"0.90  taken for Trouser ({share:.1%}), {LONG_CLASS_NAMES[2]} ({share:.1%})"
    assert_apart(boxes(names, per_class) + boxes(axes.texts, per_class))
    assert_inside(boxes(names, per_class) + boxes(axes.texts, per_class), per_class)


def test_activation_maps_caption_each_image_with_its_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cnn_pipeline.figures import features

    figures = kept(features, monkeypatch)
    model = build_model(SIMPLE_CNN_BN, (28, 28, 1), 10)
    images = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28, 1), dtype=np.uint8)
    captions = [LONG_CLASS_NAMES[6], "Coat", f"{LONG_CLASS_NAMES[9]}, predicted Sneaker"]
    plot_activation_maps(model, images, tmp_path / "activations.png", captions)
    (figure,) = figures

    texts = [text for axis in figure.axes for text in axis.texts]  # type: ignore[attr-defined]
    assert [unwrapped(text.get_text()) for text in texts] == captions
    pictures = [image for axis in figure.axes for image in axis.images]  # type: ignore[attr-defined]
    titles = [axis.title for axis in figure.axes if axis.title.get_text()]  # type: ignore[attr-defined]
    assert_apart(boxes(texts, figure) + boxes(titles, figure))
    assert_apart(boxes(texts, figure), boxes(pictures, figure))
    assert_inside(boxes(texts, figure), figure)
