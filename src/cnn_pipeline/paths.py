"""Where each stage reads and writes, relative to the repository root.

dvc.yaml names the same paths as stage deps and outs; tests/test_layout.py keeps them in sync.
"""

import os
from pathlib import Path


def repository_root(workdir: Path) -> Path:
    """The real repository: `dvc exp run --queue` runs stages in a temporary copy of it, and
    DVC names the original in DVC_ROOT."""
    return Path(os.environ.get("DVC_ROOT") or workdir).resolve()


PARAMS_FILE = Path("params.yaml")
# The check stage's verdict on params.yaml; every other stage depends on it, so a bad value stops
# `dvc repro` before DVC deletes any stage's outputs. Its content is the same for every valid
# params.yaml, so a new valid value re-runs only the stages that read it.
PARAMS_CHECK_FILE = Path("data/params_check.json")
CONFIG_DIR = Path("conf")

RAW_DIR = Path("data/raw")  # download writes the dataset here as the source publishes it
PREPARED_DIR = Path("data/prepared")  # preprocess writes train/validation/test arrays here
MODEL_FILE = Path("models/model.keras")  # the trained network, ready for `keras.saving.load_model`
CHECKPOINT_DIR = Path("models/checkpoints")  # one model file per epoch
RUN_FILE = Path("models/mlflow_run.json")  # the MLflow run train created; later stages log to it
MODEL_INFO_FILE = Path("models/model.json")  # class names and input shape, for `predict`
TRAIN_METRICS_FILE = Path("metrics/train.json")  # final loss and accuracy: DVC metrics
# Seconds and images/s of training: apart from the quality metrics, so that `dvc metrics diff`
# between two identical trainings is empty.
TRAIN_SPEED_FILE = Path("metrics/train_speed.json")
HISTORY_FILE = Path("metrics/train_history.csv")  # per-epoch loss and accuracy, a DVC plot
TEST_METRICS_FILE = Path("metrics/evaluate.json")  # test loss, accuracy, macro F1
PER_CLASS_FILE = Path("metrics/per_class.csv")  # precision, recall, F1: one row per class
PREDICTIONS_FILE = Path("metrics/test_predictions.csv")  # actual,predicted rows: DVC confusion plot
CALIBRATION_METRICS_FILE = Path("metrics/calibration.json")  # expected calibration error

# Figures and tables of what the network learned (train and report stages).
RECEPTIVE_FIELDS_FILE = Path("reports/receptive_fields.json")
CONFUSION_PNG = Path("reports/confusion_matrix.png")
PER_CLASS_PNG = Path("reports/per_class_f1.png")  # F1 per class, and what each is mistaken for
TRAINING_CURVES_PNG = Path("reports/training_curves.png")
FILTERS_PNG = Path("reports/first_layer_filters.png")
ACTIVATIONS_PNG = Path("reports/activation_maps.png")
MISTAKES_PNG = Path("reports/mistakes.png")
CALIBRATION_PNG = Path("reports/calibration.png")

MLFLOW_DB_FILE = Path("mlflow.db")  # `mlflow ui` in the repository root opens this by default
MLFLOW_ARTIFACT_DIR = Path("mlartifacts")

# `cnn-pipeline tune`: its Optuna study (a SQLite file unless a database is named) and, for each
# queued trial, the ticket its train stage reads to report to the study (search/ticket.py).
SEARCH_DIR = Path(".optuna")
SEARCH_DB_FILE = SEARCH_DIR / "search.db"
TRIAL_TICKET_DIR = SEARCH_DIR / "trials"
