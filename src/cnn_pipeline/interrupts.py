"""Ctrl-C and `kill` wait while the train stage writes a file, then stop it as before.

Keras writes `.keras` and `.weights.h5` files through h5py, which calls back into Python
from C; a KeyboardInterrupt raised inside one of those callbacks does not unwind cleanly and
can leave the file truncated: a resume backup that the next `dvc repro` fails to load
("Layer 'conv2' expected 1 variables, but received 0"; how often: docs/benchmarks.md).
While a block runs under `interrupts_held`, SIGINT and SIGTERM are only noted. When the
block ends, they are raised again with their usual handlers, which raise KeyboardInterrupt
(cli.py makes SIGTERM do the same).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any

import keras

HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Run the block to its end, then deliver any SIGINT or SIGTERM that came meanwhile."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Python runs signal handlers in the main thread only; nothing to hold here
        return
    received: list[int] = []

    def note(signal_number: int, frame: FrameType | None) -> None:
        received.append(signal_number)

    previous = {number: signal.signal(number, note) for number in HELD_SIGNALS}
    try:
        yield
    finally:
        for held, handler in previous.items():
            signal.signal(held, handler)
        for number in dict.fromkeys(received):
            signal.raise_signal(number)


class WritesUninterrupted(keras.callbacks.Callback):  # type: ignore[misc]
    """Runs `callbacks`' end-of-epoch and end-of-training hooks, which write the records,
    checkpoints and backups, under `interrupts_held`: an interruption then takes effect
    between two epochs' files, never inside one."""

    def __init__(self, callbacks: Sequence[keras.callbacks.Callback]) -> None:
        super().__init__()
        self.callbacks = list(callbacks)

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        for callback in self.callbacks:
            callback.set_model(model)

    def set_params(self, params: dict[str, Any]) -> None:
        super().set_params(params)
        for callback in self.callbacks:
            callback.set_params(params)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        for callback in self.callbacks:
            callback.on_train_begin(logs)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for callback in self.callbacks:
            callback.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        with interrupts_held():
            for callback in self.callbacks:
                callback.on_epoch_end(epoch, logs)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        with interrupts_held():
            for callback in self.callbacks:
                callback.on_train_end(logs)
