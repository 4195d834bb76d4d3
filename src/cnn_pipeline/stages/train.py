"""Train stage: fit the configured CNN on the prepared data, record it in MLflow, write the
model, one checkpoint per epoch, the per-epoch history (a DVC plot), the final training
metrics, and the MLflow run id that the evaluate and report stages add their results to.

Interrupted (Ctrl-C, `kill`), it keeps what the finished epochs learned (`resume.py`): the
next `dvc repro` continues from there, in the same MLflow run.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras

from cnn_pipeline import paths
from cnn_pipeline.accelerators import check_device, describe_run, detect, pinned_versions
from cnn_pipeline.atomic import atomic_path, write_json
from cnn_pipeline.config import AnyModelConfig, AugmentConfig, MlflowConfig, TrainConfig
from cnn_pipeline.distribution import describe_parallelism
from cnn_pipeline.errors import TrainingInterrupted
from cnn_pipeline.interrupts import WritesUninterrupted, interrupts_held
from cnn_pipeline.models.receptive_field import describe, receptive_fields
from cnn_pipeline.prepared import DatasetInfo, Split, load_info, load_split
from cnn_pipeline.resume import ResumeState, fingerprint, interrupted_run_ids
from cnn_pipeline.tracking import registry, runs, store
from cnn_pipeline.training import HISTORY_COLUMNS, history_row, train_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    history: list[dict[str, float]]  # every epoch of the training, keys HISTORY_COLUMNS
    device: str
    seconds: float  # fit() of this invocation (the resumed part only, after an interruption)


CHECKPOINT_NAME = "epoch_{epoch:03d}.keras"  # models/checkpoints/epoch_001.keras, ...
BACKEND_PACKAGES = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",)}


def serving_requirements() -> list[str]:
    """What the logged model needs to be served: Keras, NumPy, pandas and the backend, pinned
    (MLflow adds itself).

    Given explicitly, because MLflow's own inference of them loads the model again in a
    subprocess (a second TensorFlow import): 11.8 s against 0.7 s here.
    """
    backend_packages = BACKEND_PACKAGES.get(keras.config.backend(), ())
    return pinned_versions(("keras", "numpy", "pandas", *backend_packages))


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


def _write_history(history: list[dict[str, float]], path: Path) -> None:
    with atomic_path(path) as staged, staged.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(history)


def run(
    model_config: AnyModelConfig,
    augment_config: AugmentConfig,
    train_config: TrainConfig,
    mlflow_config: MlflowConfig,
    context: store.TrackingContext,
    run_description: runs.RunDescription,
    experiment_id: str,
    workdir: Path,
    resumable: bool = True,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """Train on workdir/data/prepared and write the model and its records under workdir,
    recorded in an MLflow run of `experiment_id` (`store.open_experiment`), continued
    where an interrupted training of the same configuration left one. `resumable=False` (on
    several processes, where only process 0 could restore a backup) always starts afresh.
    `callbacks` run after each epoch's records and backup (a search's `TrialReporter`)."""
    prepared_dir = workdir / paths.PREPARED_DIR
    info: DatasetInfo = load_info(prepared_dir)
    splits = {name: load_split(prepared_dir, name) for name in ("train", "validation", "test")}
    train, validation = splits["train"], splits["validation"]
    runs.mark_killed(interrupted_run_ids(context.repo_root))
    state = ResumeState.for_training(
        context.repo_root,
        fingerprint(run_description.params, sorted(prepared_dir.iterdir())),
    )
    if resumable and state.has_backup() and not state.is_resumable():
        logger.warning("the interrupted training's backup cannot be read: training starts afresh")
    run_id = state.run_id() if resumable and state.is_resumable() else None
    if run_id is not None and runs.continue_run(run_id):
        logger.info("resuming the interrupted training (MLflow run %s)", run_id)
    else:
        state.discard()
        run_id = runs.start_run(experiment_id, run_description)
        runs.log_datasets(
            info.name,
            {
                name: (split.images, split.labels, str(prepared_dir / f"{name}.npz"))
                for name, split in splits.items()
            },
        )
        state.prepare()
        state.save_run_id(run_id)

    with state.held():
        accelerators = detect(train_config.device)  # train.device=cpu hides GPUs first
        check_device(train_config.device, accelerators)
        device = accelerators.describe()
        # device, backend, precision, GPU model and count, driver and CUDA versions
        ran_on = {"device": device, **describe_run(accelerators)}
        ran_on |= describe_parallelism(accelerators, train_config.distribute)  # processes, devices
        runs.set_tags(ran_on)
        records = EpochRecords(state, info.image_shape[0])
        backup = [keras.callbacks.BackupAndRestore(str(state.backup_dir), delete_checkpoint=False)]
        try:
            result = train_model(
                train,
                validation,
                info,
                model_config,
                augment_config,
                train_config,
                accelerators=accelerators,
                callbacks=[
                    WritesUninterrupted(
                        [
                            records,
                            *(backup if resumable else []),
                            keras.callbacks.ModelCheckpoint(
                                str(state.checkpoint_dir / CHECKPOINT_NAME)
                            ),
                            MlflowEpochLogger(run_id, records),
                            *callbacks,
                        ]
                    )
                ],
            )
        except KeyboardInterrupt:
            runs.end_run("KILLED")
            finished = len(records.rows)
            then = f"resumes from epoch {finished + 1}" if resumable else "starts afresh"
            raise TrainingInterrupted(
                f"training interrupted after epoch {finished} of {train_config.epochs}; "
                f"`dvc repro` {then} (MLflow run {run_id})"
            ) from None
        except BaseException:
            runs.end_run("FAILED")
            raise
        images_per_second = len(train.labels) * len(result.history) / max(result.seconds, 1e-9)
        speed = {
            "train_seconds": round(result.seconds, 2),
            "train_images_per_second": round(images_per_second, 1),
        }
        with interrupts_held():
            ran_on = {"device": device, **ran_on}
            _write_outputs(
                result.model, records, speed, ran_on, info, train, mlflow_config, workdir
            )
            write_json({"run_id": run_id, "experiment_id": experiment_id}, workdir / paths.RUN_FILE)
            with atomic_path(workdir / paths.CHECKPOINT_DIR) as staged_checkpoints:
                state.checkpoint_dir.rename(staged_checkpoints)
            state.discard()
    logger.info(
        "trained %s on %s in %.1f s on %s (MLflow run %s)",
        model_config.name,
        info.name,
        result.seconds,
        device,
        run_id,
    )
    return TrainResult(run_id=run_id, history=records.rows, device=device, seconds=result.seconds)


def _write_outputs(
    model: keras.Model,
    records: EpochRecords,
    speed: dict[str, float],
    ran_on: dict[str, str],
    info: DatasetInfo,
    train: Split,
    mlflow_config: MlflowConfig,
    workdir: Path,
) -> None:
    """Save the model, log and register it in the active MLflow run and end the run, then
    write the stage's metrics and records."""
    model_info = {
        "dataset": info.name,
        "class_names": list(info.class_names),
        "image_shape": list(info.image_shape),
        # Light on dark or dark on light: predict inverts new images whose polarity differs.
        "polarity": info.polarity,
    }
    try:
        with atomic_path(workdir / paths.MODEL_FILE) as staged_model:
            model.save(staged_model)
        write_json(model_info, workdir / paths.MODEL_INFO_FILE)
        registry.log_and_register_model(
            model,
            keras_file=workdir / paths.MODEL_FILE,
            model_info_file=workdir / paths.MODEL_INFO_FILE,
            sample_images=train.images[:4],  # the signature: raw uint8 pixels
            registered_model_name=mlflow_config.registered_model_name,
            metadata=model_info,  # class names travel with the registered model
            pip_requirements=serving_requirements(),
            metrics=speed,
            params={"model.parameter_count": model.count_params()},
            documents={
                "receptive_fields.json": {"layers": records.receptive_fields},
                "model_info.json": model_info,
            },
        )
    except BaseException:
        runs.end_run("FAILED")
        raise
    runs.end_run("FINISHED")

    history = records.rows
    final = history[-1]
    write_json(
        {
            **{key: final[key] for key in ("loss", "accuracy", "val_loss", "val_accuracy")},
            "epochs": len(history),
            **ran_on,
        },
        workdir / paths.TRAIN_METRICS_FILE,
    )
    write_json(speed, workdir / paths.TRAIN_SPEED_FILE)
    _write_history(history, workdir / paths.HISTORY_FILE)
    write_json({"layers": records.receptive_fields}, workdir / paths.RECEPTIVE_FIELDS_FILE)
