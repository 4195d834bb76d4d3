"""Train stage: fit the configured CNN on the prepared data, record it in MLflow, and write the
model, one checkpoint per epoch, the per-epoch history (a DVC plot), the final training
metrics, and the MLflow run id that the evaluate and report stages add their results to.

Read from top to bottom: `main` validates what the stage reads of params.yaml
(`TrainSettings`) and, where several processes train together, meets the others; `train`
opens the MLflow experiment (before TensorFlow's import, so that a store that cannot be
reached fails in seconds), fits the network inside the one MLflow run
(`runs.training_run`), then writes the outputs.

Interrupted (Ctrl-C, `kill`), it keeps what the finished epochs learned (`resume.py`): the
next `dvc repro` continues from there, in the same MLflow run. Files are written under
`interrupts_held`, so an interruption never cuts one in half.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnn_pipeline import config, models, paths
from cnn_pipeline.atomic import atomic_path, write_json
from cnn_pipeline.compose import committed_params, default_params, describe_changes
from cnn_pipeline.errors import TrainingInterrupted
from cnn_pipeline.search.ticket import read_ticket

if TYPE_CHECKING:
    import keras

    from cnn_pipeline.epoch_records import EpochRecords
    from cnn_pipeline.prepared import Split

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "epoch_{epoch:03d}.keras"  # models/checkpoints/epoch_001.keras, ...
BACKEND_PACKAGES = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",)}


@dataclass(frozen=True)
class TrainSettings:
    """What the train stage reads of params.yaml, each section validated."""

    data: config.DataConfig
    model: config.NetworkConfig
    augment: config.AugmentConfig
    train: config.TrainConfig
    mlflow: config.MlflowConfig
    params: dict[str, Any]  # params.yaml as read: the run is named after how it differs

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrainSettings:
        return cls(
            config.data_config(params),
            models.model_config(params),
            config.augment_config(params),
            config.train_config(params),
            config.mlflow_config(params),
            params,
        )

    def changes(self, repo_root: Path, commit: str | None, config_dir: Path) -> dict[str, str]:
        """What these params change from `commit`'s params.yaml (the experiment's baseline
        under `dvc exp run`), or from conf/'s defaults without git, as `-S` would set it:
        `{"model": "lenet5", "train.learning_rate": "0.003"}`. They name the MLflow run."""
        baseline = (commit and committed_params(repo_root, commit)) or default_params(config_dir)
        return describe_changes(self.params, baseline, config_dir) if baseline else {}

    def defining_params(self) -> dict[str, Any]:
        """What defines the trained model: the MLflow run's params, and what an interrupted
        training must share to be continued. Mirrors are left out: checksums, not the
        mirror, define the data."""
        return {
            "data": self.data.model_dump(exclude={"mirrors", "mirror"}),
            "model": self.model.model_dump(),
            "augment": self.augment.model_dump(),
            "train": self.train.model_dump(),
        }


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    history: list[dict[str, float]]  # every epoch of the training, keys HISTORY_COLUMNS
    device: str
    seconds: float  # fit() of this invocation (the resumed part only, after an interruption)


def main(params: dict[str, Any], workdir: Path) -> None:
    """`cnn-pipeline train`: validate, meet the other processes if there are several (only
    process 0 records and writes anything), then train."""
    settings = TrainSettings.from_params(params)
    from cnn_pipeline import multihost

    cluster = multihost.from_environment(os.environ)  # JAX_NUM_PROCESSES or SLURM
    if cluster:
        multihost.join(cluster, settings.defining_params(), workdir / paths.PREPARED_DIR)
    with multihost.stop_together(cluster):  # on several processes, an error stops them all
        if cluster and not cluster.writes_outputs:
            multihost.train_as_peer(settings.model, settings.augment, settings.train, workdir)
        else:
            train(settings, workdir, resumable=cluster is None)


def train(settings: TrainSettings, workdir: Path, resumable: bool = True) -> TrainResult:
    """Train on workdir/data/prepared and write the model and its records under workdir,
    continuing an interrupted training of the same settings where one was left.
    `resumable=False` (on several processes, where only process 0 could restore a backup)
    always starts afresh."""
    from cnn_pipeline.prepared import load_info, load_split
    from cnn_pipeline.tracking import runs, store

    context = store.TrackingContext.from_environment(workdir)
    experiment_id = store.open_experiment(context, settings.mlflow.experiment_name)
    # A trial of `cnn-pipeline tune` reports every epoch to its search, which may stop it.
    ticket = read_ticket(context.repo_root, context.dvc_experiment)
    prepared_dir = workdir / paths.PREPARED_DIR
    info = load_info(prepared_dir)
    splits = {name: load_split(prepared_dir, name) for name in ("train", "validation", "test")}
    config_dir = workdir / paths.CONFIG_DIR
    changes = settings.changes(context.repo_root, context.baseline_commit, config_dir)
    description = runs.describe_training(context, settings.defining_params(), info.name, changes)

    # TensorFlow (or JAX) is imported from here on.
    import keras

    from cnn_pipeline.accelerators import check_device, describe_run, detect
    from cnn_pipeline.distribution import describe_parallelism
    from cnn_pipeline.epoch_records import EpochRecords, MlflowEpochLogger
    from cnn_pipeline.interrupts import WritesUninterrupted, interrupts_held
    from cnn_pipeline.resume import ResumeState, fingerprint, interrupted_run_ids
    from cnn_pipeline.training import train_model

    runs.mark_killed(interrupted_run_ids(context.repo_root))
    state = ResumeState.for_training(
        context.repo_root, fingerprint(description.params, sorted(prepared_dir.iterdir()))
    )
    if resumable and state.has_backup() and not state.is_resumable():
        logger.warning("the interrupted training's backup cannot be read: training starts afresh")
    interrupted_run_id = state.run_id() if resumable and state.is_resumable() else None

    with state.held(), runs.training_run(experiment_id, description, interrupted_run_id) as run:
        if run.resumed:
            logger.info("resuming the interrupted training (MLflow run %s)", run.run_id)
        else:
            state.discard()
            runs.log_datasets(
                info.name,
                {
                    name: (split.images, split.labels, str(prepared_dir / f"{name}.npz"))
                    for name, split in splits.items()
                },
            )
            state.prepare()
            state.save_run_id(run.run_id)

        accelerators = detect(settings.train.device)  # train.device=cpu hides GPUs first
        check_device(settings.train.device, accelerators)
        device = accelerators.describe()
        # device, backend, precision, GPU model and count, driver and CUDA versions, processes
        ran_on = {"device": device, **describe_run(accelerators)}
        ran_on |= describe_parallelism(accelerators, settings.train.distribute)
        runs.set_tags(ran_on)

        records = EpochRecords(state, info.image_shape[0])
        backup = keras.callbacks.BackupAndRestore(str(state.backup_dir), delete_checkpoint=False)
        epoch_end_writes = [
            records,
            *([backup] if resumable else []),
            keras.callbacks.ModelCheckpoint(str(state.checkpoint_dir / CHECKPOINT_NAME)),
            MlflowEpochLogger(run.run_id, records),
        ]
        if ticket is not None:  # after the epoch's records and backup
            from cnn_pipeline.search.pruning import TrialReporter

            epoch_end_writes.append(TrialReporter(ticket))
        try:
            result = train_model(
                splits["train"],
                splits["validation"],
                info,
                settings.model,
                settings.augment,
                settings.train,
                accelerators=accelerators,
                callbacks=[WritesUninterrupted(epoch_end_writes)],
            )
        except KeyboardInterrupt:
            finished = len(records.rows)
            then = f"resumes from epoch {finished + 1}" if resumable else "starts afresh"
            raise TrainingInterrupted(
                f"training interrupted after epoch {finished} of {settings.train.epochs}; "
                f"`dvc repro` {then} (MLflow run {run.run_id})"
            ) from None

        trained_images = len(splits["train"].labels) * len(result.history)
        images_per_second = trained_images / max(result.seconds, 1e-9)
        speed = {
            "train_seconds": round(result.seconds, 2),
            "train_images_per_second": round(images_per_second, 1),
        }
        model_info = {
            "dataset": info.name,
            "class_names": list(info.class_names),
            "image_shape": list(info.image_shape),
            # Light on dark or dark on light: predict inverts new images whose polarity differs.
            "polarity": info.polarity,
        }
        with interrupts_held():  # a Ctrl-C from here on waits for every output
            with atomic_path(workdir / paths.MODEL_FILE) as staged_model:
                result.model.save(staged_model)
            write_json(model_info, workdir / paths.MODEL_INFO_FILE)
            _log_model(result.model, settings, workdir, speed, model_info, records, splits)
            run.finish()
            _write_records(records, speed, ran_on, workdir)
            write_json(
                {"run_id": run.run_id, "experiment_id": experiment_id}, workdir / paths.RUN_FILE
            )
            with atomic_path(workdir / paths.CHECKPOINT_DIR) as staged_checkpoints:
                state.checkpoint_dir.rename(staged_checkpoints)
            state.discard()

    logger.info(
        "trained %s on %s in %.1f s on %s (MLflow run %s)",
        settings.model.name,
        info.name,
        result.seconds,
        device,
        run.run_id,
    )
    return TrainResult(run.run_id, records.rows, device, result.seconds)


def serving_requirements() -> list[str]:
    """What the logged model needs to be served: Keras, NumPy, pandas and the backend, pinned
    (MLflow adds itself). Given explicitly, because MLflow's own inference of them loads the
    model again in a subprocess: a second TensorFlow import (docs: benchmarks)."""
    import keras

    from cnn_pipeline.accelerators import pinned_versions

    backend_packages = BACKEND_PACKAGES.get(keras.config.backend(), ())
    return pinned_versions(("keras", "numpy", "pandas", *backend_packages))


def _log_model(
    model: keras.Model,
    settings: TrainSettings,
    workdir: Path,
    speed: dict[str, float],
    model_info: dict[str, Any],
    records: EpochRecords,
    splits: dict[str, Split],
) -> None:
    """Log the saved model to the active run and register it as a new version."""
    from cnn_pipeline.tracking import registry

    registry.log_and_register_model(
        model,
        keras_file=workdir / paths.MODEL_FILE,
        model_info_file=workdir / paths.MODEL_INFO_FILE,
        sample_images=splits["train"].images[:4],  # the signature: raw uint8 pixels
        registered_model_name=settings.mlflow.registered_model_name,
        metadata=model_info,  # class names travel with the registered model
        pip_requirements=serving_requirements(),
        metrics=speed,
        params={"model.parameter_count": model.count_params()},
        documents={
            "receptive_fields.json": {"layers": records.receptive_fields},
            "model_info.json": model_info,
        },
    )


def _write_records(
    records: EpochRecords, speed: dict[str, float], ran_on: dict[str, str], workdir: Path
) -> None:
    """The stage's metrics and records: final metrics, speed, history, receptive fields."""
    from cnn_pipeline.training import HISTORY_COLUMNS

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
    with atomic_path(workdir / paths.HISTORY_FILE) as staged, staged.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(history)
    write_json({"layers": records.receptive_fields}, workdir / paths.RECEPTIVE_FIELDS_FILE)
