"""What the train stage keeps of every finished epoch: its history row (for resume and the
DVC plot) and its metrics in the MLflow run. Both callbacks run under
`interrupts.WritesUninterrupted`, so an interruption never cuts one of their writes in half.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

import keras

from cnn_pipeline.models.receptive_field import describe, receptive_fields
from cnn_pipeline.resume import ResumeState
from cnn_pipeline.tracking import runs
from cnn_pipeline.training import HISTORY_COLUMNS, history_row

logger = logging.getLogger(__name__)


class EpochRecords(keras.callbacks.Callback):  # type: ignore[misc]
    """Keeps every finished epoch's row in the resume state, before the backup of that epoch
    is written: after a resume the rows of epochs being trained again are dropped, so the
    history holds each epoch exactly once. Also prints the model and its receptive fields
    when training begins."""

    def __init__(self, state: ResumeState, image_size: int) -> None:
        super().__init__()
        self.state = state
        self.image_size = image_size
        self.rows = state.history()
        self.receptive_fields: list[dict[str, Any]] = []

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        self.model.summary(print_fn=logger.info)
        fields = receptive_fields(self.model)
        self.receptive_fields = [asdict(row) for row in fields]
        logger.info(
            "receptive fields, in pixels of the input image:\n%s", describe(fields, self.image_size)
        )

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if self.rows and self.rows[-1]["epoch"] > epoch:
            self.rows = [row for row in self.rows if row["epoch"] <= epoch]
            self.state.save_history(self.rows)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.rows.append(history_row(epoch, logs or {}))
        self.state.save_history(self.rows)


class MlflowEpochLogger(keras.callbacks.Callback):  # type: ignore[misc]
    """Logs every epoch's metrics to the active MLflow run (one call, step = epoch), after its
    backup: a resumed training first logs the finished epochs the run is missing, so the run
    ends with each step exactly once."""

    def __init__(self, run_id: str, records: EpochRecords) -> None:
        super().__init__()
        self.run_id = run_id
        self.records = records
        self.caught_up = False

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if self.caught_up:
            return
        self.caught_up = True
        logged = runs.logged_steps(self.run_id, "loss")
        for row in self.records.rows:
            if int(row["epoch"]) not in logged:
                self._log({key: row[key] for key in HISTORY_COLUMNS[1:]}, int(row["epoch"]))

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self._log(logs or {}, epoch + 1)

    @staticmethod
    def _log(metrics: dict[str, float], step: int) -> None:
        import mlflow

        mlflow.log_metrics({key: float(value) for key, value in metrics.items()}, step=step)
