"""Ctrl-C and `kill` wait for the file being written (interrupts.py), and a backup that `kill -9`
truncated is not resumed (resume.py)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from cnn_pipeline.interrupts import WritesUninterrupted, interrupts_held
from cnn_pipeline.resume import ResumeState


class InterruptedMidway(keras.callbacks.Callback):  # type: ignore[misc]
    """Saves the model at each epoch's end, with a Ctrl-C arriving while it does."""

    def __init__(self, folder: Path, signal_number: int) -> None:
        super().__init__()
        self.folder = folder
        self.signal_number = signal_number

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        signal.raise_signal(self.signal_number)
        self.model.save(self.folder / f"epoch_{epoch + 1}.keras")


@pytest.fixture(autouse=True)
def interrupts_stop_python() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt, as in `cnn-pipeline` run from a terminal
    (a test suite run as a background job of a non-interactive shell ignores SIGINT)."""
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    for number in previous:
        signal.signal(number, signal.default_int_handler)
    yield
    for number, handler in previous.items():
        signal.signal(number, handler)


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_an_interruption_waits_for_the_epochs_files_then_stops_training(
    tmp_path: Path, signal_number: int
) -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    callback = WritesUninterrupted([InterruptedMidway(tmp_path, signal_number)])
    with pytest.raises(KeyboardInterrupt):
        model.fit(np.ones((8, 4)), np.ones((8, 2)), epochs=3, verbose=0, callbacks=[callback])
    # The first epoch's file was written whole, and training stopped right after it.
    assert [path.name for path in tmp_path.iterdir()] == ["epoch_1.keras"]
    assert keras.saving.load_model(tmp_path / "epoch_1.keras").count_params() == 10


def test_a_held_interruption_comes_after_the_block_and_handlers_are_restored() -> None:
    steps = []
    with pytest.raises(KeyboardInterrupt), interrupts_held():
        signal.raise_signal(signal.SIGINT)
        steps.append("after the signal")
    assert steps == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with interrupts_held():  # nothing came: nothing is raised
        steps.append("quiet")
    assert steps == ["after the signal", "quiet"]


def test_only_a_backup_that_reads_whole_is_resumed(tmp_path: Path) -> None:
    state = ResumeState(tmp_path / "state")
    state.backup_dir.mkdir(parents=True)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((8, 4)), np.ones((8, 2)), epochs=1, verbose=0)
    model.save_weights(state.backup_dir / "latest.weights.h5")  # as BackupAndRestore writes it
    (state.backup_dir / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
    assert state.has_backup() and state.is_resumable()

    weights = state.backup_dir / "latest.weights.h5"
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])  # a kill -9 during the write
    assert state.has_backup() and not state.is_resumable()
    weights.write_bytes(whole)
    (state.backup_dir / "training_metadata.json").write_text('{"epoch": 1, "ba')
    assert not state.is_resumable()
