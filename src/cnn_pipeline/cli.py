"""`cnn-pipeline`: one subcommand per DVC stage, plus `params` to compose params.yaml.

Each subcommand validates the params.yaml sections it reads before importing anything heavy
(TensorFlow takes 5-15 s to import), so a typo fails in a second with one line, not a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnn_pipeline import config, paths
from cnn_pipeline.errors import TrainingInterrupted, UserError

if TYPE_CHECKING:
    from cnn_pipeline.tracking.store import TrackingContext

logger = logging.getLogger("cnn_pipeline")


def _download(params: dict[str, Any], workdir: Path) -> None:
    from cnn_pipeline import datasets

    data_config = datasets.data_config(params)
    # Relative image folders are relative to the repository, also when `dvc exp run --queue`
    # runs this stage in a temporary copy of it.
    repo_root = paths.repository_root(workdir)
    data_config = data_config.model_copy(
        update={
            key: str(repo_root / value)
            for key in ("path", "test_path")
            if (value := getattr(data_config, key)) is not None and not Path(value).is_absolute()
        }
    )
    from cnn_pipeline.stages import download

    download.run(data_config, workdir / paths.RAW_DIR)


def _preprocess(params: dict[str, Any], workdir: Path) -> None:
    from cnn_pipeline import datasets

    data_config = datasets.data_config(params)
    from cnn_pipeline.stages import preprocess

    preprocess.run(data_config, workdir / paths.RAW_DIR, workdir / paths.PREPARED_DIR)


def _train(params: dict[str, Any], workdir: Path) -> None:
    from cnn_pipeline.stages import train

    train.main(params, workdir)


def _evaluate(params: dict[str, Any], workdir: Path) -> None:
    evaluate_config = config.evaluate_config(params)
    from cnn_pipeline.stages import evaluate
    from cnn_pipeline.tracking.store import TrackingContext

    evaluate.run(evaluate_config, TrackingContext.from_environment(workdir), workdir)


def _report(params: dict[str, Any], workdir: Path) -> None:
    report_config = config.report_config(params)
    batch_size = config.evaluate_config(params).batch_size  # one batch size for the test set
    from cnn_pipeline.stages import report
    from cnn_pipeline.tracking.store import TrackingContext

    report.run(report_config, TrackingContext.from_environment(workdir), workdir, batch_size)


STAGES: dict[str, tuple[Callable[[dict[str, Any], Path], None], str]] = {
    "download": (_download, "write the configured dataset's raw files to data/raw/"),
    "preprocess": (
        _preprocess,
        "split data/raw/ into train/validation/test arrays in data/prepared/",
    ),
    "train": (_train, "train the configured CNN, save models/model.keras, log an MLflow run"),
    "evaluate": (_evaluate, "test the model on the test set; write metrics/ and log to MLflow"),
    "report": (_report, "draw filters, activations, mistakes, calibration into reports/"),
}
TESTING = ("evaluate", "report")  # stages that run the trained model over the test set


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnn-pipeline",
        description="Stages of the CNN pipeline (dvc.yaml runs them) and params composition.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in STAGES.items():
        stage = commands.add_parser(name, help=help_text, description=help_text)
        stage.add_argument(
            "--params",
            type=Path,
            default=paths.PARAMS_FILE,
            help="params file to read (default: %(default)s)",
        )
    compose = commands.add_parser(
        "params",
        help="compose conf/ into params.yaml, as `dvc exp run` does",
        description="Compose conf/ with Hydra overrides (e.g. model=lenet5 train.epochs=5) into "
        "params.yaml, as `dvc exp run -S ...` would, keeping the values of the current "
        "params.yaml that conf/ does not hold (--reset drops them); then `dvc repro` uses it. "
        "The result is validated as the stages validate it, and nothing is written if it fails. "
        "Works from any folder of the repository.",
    )
    compose.add_argument("overrides", nargs="*", help="Hydra overrides such as data=mnist")
    compose.add_argument(
        "--reset",
        action="store_true",
        help="start from conf/ alone; without it, the values of the current params.yaml that "
        "conf/ does not hold (hand edits, an earlier switch such as model=lenet5) are kept",
    )
    compose.add_argument(
        "--config-dir",
        type=Path,
        default=None,
        help=f"the Hydra config tree (default: the repository's {paths.CONFIG_DIR}/)",
    )
    compose.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"where to write (default: the repository's {paths.PARAMS_FILE}; with --config-dir, "
        f"{paths.PARAMS_FILE} in the current folder)",
    )

    promote = commands.add_parser(
        "promote",
        help="point the champion alias at the best registered model version",
        description="Point an alias of the registered model (params.yaml mlflow."
        "registered_model_name) at a version: the one with the best test accuracy, or "
        "--version N. Then `predict --model models:/cnn-pipeline@champion` uses it.",
    )
    promote.add_argument("--version", type=int, help="this version instead of the best one")
    promote.add_argument("--alias", default="champion", help="(default: %(default)s)")
    promote.add_argument(
        "--params",
        type=Path,
        default=None,
        help=f"(default: the repository's {paths.PARAMS_FILE}, for mlflow.registered_model_name)",
    )

    tune = commands.add_parser(
        "tune",
        help="search hyperparameters: every trial a DVC experiment and an MLflow run",
        description="Search the values of conf/search/NAME.yaml with Optuna: each trial runs the "
        "pipeline as a queued DVC experiment named STUDY-N, logs a child of the "
        "search's MLflow run, and stops early when its validation metric falls behind. Running "
        "the same command again continues the study. Prints the best trial and how to apply it.",
    )
    tune.add_argument("overrides", nargs="*", help="Hydra overrides every trial starts from, "
                      "after the search file's, e.g. train.epochs=5")  # fmt: skip
    tune.add_argument(
        "--search", default="default", help="conf/search/NAME.yaml (default: %(default)s)"
    )
    tune.add_argument("--trials", type=int, help="trials to finish (default: the search file's)")
    tune.add_argument("--timeout", type=float, help="seconds after which no new trial starts")
    tune.add_argument("-j", "--jobs", type=int, default=1, help="trials run at once (default: 1)")
    tune.add_argument("--name", help="the study, also the prefix of its experiments "
                      "(default: the search file's name)")  # fmt: skip
    tune.add_argument(
        "--storage",
        help="the study's database URL, shared by several machines, e.g. "
        "postgresql://USER@HOST/DB (default: $CNN_PIPELINE_SEARCH_STORAGE, else "
        f"sqlite:///{paths.SEARCH_DB_FILE} in the repository)",
    )
    tune.add_argument("--no-pruning", action="store_true", help="train every trial to the end")

    predict = commands.add_parser(
        "predict",
        help="classify image files with the trained model",
        description="Classify PNG/JPEG/BMP/GIF images: each is converted and resized to what the "
        "model takes, and its most probable classes are printed. Works from any folder of the "
        "repository.",
    )
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    predict.add_argument(
        "--model",
        default=None,
        help="a .keras file, or an MLflow model URI such as models:/cnn-pipeline/3 or "
        f"models:/cnn-pipeline@champion (default: the repository's {paths.MODEL_FILE})",
    )
    predict.add_argument("--top", type=int, default=3, help="classes shown per image")
    predict.add_argument(
        "--invert",
        choices=("auto", "yes", "no"),
        default="auto",
        help="invert grayscale images; auto (the default): when an image is light on dark and "
        "the training images were dark on light, or the other way round",
    )
    predict.add_argument("--json", action="store_true", help="print JSON, one object per image")
    predict.add_argument(
        "--request",
        action="store_true",
        help="print, instead of predicting, the JSON request that `cnn-pipeline serve` and "
        "`mlflow models serve` answer: the images converted, resized and inverted as predict "
        "would, as raw 0-255 pixels",
    )

    serve = commands.add_parser(
        "serve",
        help="serve a registered model over HTTP (mlflow models serve)",
        description="Run `mlflow models serve` on a registered model, in this environment, "
        "with the repository's MLflow store and without download progress bars. POST "
        "`cnn-pipeline predict --request IMAGE` to http://HOST:PORT/invocations. Works from "
        "any folder of the repository.",
    )
    serve.add_argument(
        "--model",
        default=None,
        help="an MLflow model URI (default: models:/<mlflow.registered_model_name>@champion)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="(default: %(default)s)")
    serve.add_argument("--port", type=int, default=5001, help="(default: %(default)s)")
    return parser


def _compose(arguments: argparse.Namespace) -> None:
    from cnn_pipeline.atomic import atomic_path
    from cnn_pipeline.compose import check_composed, compose_params, find_repository_root
    from cnn_pipeline.hand_edits import describe_lost, kept_edits

    if arguments.config_dir is None:
        root = find_repository_root(Path.cwd())
        config_dir, output = root / paths.CONFIG_DIR, arguments.output or root / paths.PARAMS_FILE
    else:  # another conf/ tree: params.yaml here, as a stage run here reads it
        config_dir, output = arguments.config_dir, arguments.output or paths.PARAMS_FILE
    # The values of the current params.yaml that conf/ does not hold are carried over, unless
    # --reset asks to start from conf/ alone.
    kept = kept_edits(config_dir, output, arguments.overrides)
    carried = [] if arguments.reset else kept.overrides
    text = compose_params(config_dir, [*carried, *arguments.overrides])
    try:
        check_composed(text)
    except UserError as error:
        raise UserError(f"{error} ({output} left unchanged)") from None
    with atomic_path(output) as staged:
        staged.write_text(text, encoding="utf-8")
    if kept.lost and arguments.reset:
        logger.info("dropped %s", describe_lost(kept.lost))
    elif carried:
        logger.info(
            "kept from %s: %s (`cnn-pipeline params --reset ...` starts from conf/ alone)",
            output.name,
            " ".join(carried),
        )
    logger.info("wrote %s from %s %s", output, config_dir, " ".join(arguments.overrides))


def _repository_root() -> Path | None:
    """The repository the current folder is in (DVC_ROOT inside a stage), if any."""
    if os.environ.get("DVC_ROOT"):
        return paths.repository_root(Path.cwd())
    from cnn_pipeline.compose import find_repository_root

    try:
        return find_repository_root(Path.cwd())
    except UserError:
        return None


def _tracking_context() -> TrackingContext:
    """The MLflow store of the repository the current folder is in (of the current folder
    outside one), as the stages use it."""
    from cnn_pipeline.tracking.store import TrackingContext

    return TrackingContext.from_environment(_repository_root() or Path.cwd())


def _repository_params(given: Path | None) -> dict[str, Any]:
    """`given`, or else the params.yaml of the repository the current folder is in."""
    return config.read_params(given or (_repository_root() or Path.cwd()) / paths.PARAMS_FILE)


def _promote(arguments: argparse.Namespace) -> None:
    mlflow_config = config.mlflow_config(_repository_params(arguments.params))
    from cnn_pipeline.tracking.registry import promote

    context = _tracking_context()
    name = mlflow_config.registered_model_name
    version, accuracy = promote(context, name, arguments.version, arguments.alias)
    logger.info(
        "models:/%s@%s is now version %s (test accuracy %s)",
        name,
        arguments.alias,
        version,
        accuracy or "not evaluated",
    )


def _default_model() -> str:
    root = _repository_root()
    if root is None:
        raise UserError(
            f"{Path.cwd()} is not inside the pipeline's repository, where "
            f"{paths.MODEL_FILE} is: run predict there, or pass --model"
        )
    return str(root / paths.MODEL_FILE)


def _predict(arguments: argparse.Namespace) -> int:
    if arguments.top < 1:
        raise UserError(f"--top {arguments.top} is invalid: show at least 1 class")
    from cnn_pipeline.predict import predict_files, print_request, print_results, request_body
    from cnn_pipeline.trained_model import load, model_input

    source = arguments.model or _default_model()
    tracking_uri = _tracking_context().tracking_uri
    if arguments.request:  # the model's input shape is enough: no Keras
        image_shape, polarity = model_input(source, tracking_uri)
        body, unreadable = request_body(arguments.images, image_shape, arguments.invert, polarity)
        print_request(body, unreadable)
        return 1 if unreadable else 0
    trained = load(source, tracking_uri)
    predictions, unreadable = predict_files(
        trained, arguments.images, min(arguments.top, len(trained.class_names)), arguments.invert
    )
    print_results(predictions, unreadable, arguments.json)
    return 1 if unreadable else 0


def _serve(arguments: argparse.Namespace) -> int:
    """Replace this process by `mlflow models serve`: Ctrl-C and `kill` then reach it."""
    from cnn_pipeline.trained_model import model_input

    model = arguments.model
    if model is None:
        name = config.mlflow_config(_repository_params(None)).registered_model_name
        model = f"models:/{name}@champion"
    tracking_uri = _tracking_context().tracking_uri
    try:
        model_input(model, tracking_uri)  # one line now rather than a traceback from MLflow
    except UserError as error:
        hint = "run `cnn-pipeline promote` first, or " if model.endswith("@champion") else ""
        raise UserError(f"{error}: {hint}pass --model models:/NAME/VERSION") from None
    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking_uri)
    mlflow = Path(sys.executable).parent / "mlflow"  # this environment's, as --env-manager says
    command = [str(mlflow), "models", "serve", "-m", model, "--env-manager", "local"]
    command += ["--host", arguments.host, "--port", str(arguments.port)]
    logger.info("serving %s on http://%s:%s/invocations", model, arguments.host, arguments.port)
    sys.stderr.flush()
    os.execv(command[0], command)
    return 0  # not reached: execv does not return


STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # it starts DVC experiment names


def _tune(arguments: argparse.Namespace) -> None:
    from cnn_pipeline.compose import find_repository_root
    from cnn_pipeline.search import space

    root = find_repository_root(Path.cwd())
    search = space.load_search(root / paths.CONFIG_DIR, arguments.search)
    search = search.model_copy(update={"overrides": [*search.overrides, *arguments.overrides]})
    if arguments.no_pruning:
        pruner = search.pruner.model_copy(update={"enabled": False})
        search = search.model_copy(update={"pruner": pruner})
    trials = search.trials if arguments.trials is None else arguments.trials
    timeout = search.timeout if arguments.timeout is None else arguments.timeout
    if arguments.jobs < 1:
        raise UserError(f"-j {arguments.jobs} runs no trial: give 1 or more")
    study = arguments.name or arguments.search
    if not STUDY_NAME.fullmatch(study):
        raise UserError(
            f"--name {study!r} cannot start a DVC experiment's name: use letters, digits, - and _"
        )
    space.check_search(search, root / paths.CONFIG_DIR, trials, timeout)
    space.check_kept_edits(search, root)
    mlflow_config = config.mlflow_config(config.read_params(root / paths.PARAMS_FILE))
    from cnn_pipeline.search import tune

    storage = tune.storage_url(root, arguments.storage)
    runner = tune.Search(
        root, search, study, storage, arguments.jobs, mlflow_config.experiment_name
    )
    tune.print_summary(runner.run(trials, timeout), search.metric)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format=f"[{arguments.command}] %(message)s", stream=sys.stderr
    )
    # MLflow's own notices (creating its tables, which project manager it detected, a
    # progress bar for copying one small file) are not for the user of a stage; its
    # warnings that ask for action, and errors, still show. Read when MLflow is imported.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # ...except that a uv environment has no pip whose version MLflow could record.
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)
    # `kill` (SIGTERM, what schedulers and `dvc queue kill` send) stops as Ctrl-C does: the
    # train stage then keeps its finished epochs and ends its MLflow run as KILLED.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # Before any stage imports Keras, which reads it once (an exported value wins): JAX with
    # the GPU install, Keras's numpy backend for a small test set, else TensorFlow.
    from cnn_pipeline.accelerators import default_backend, jax_cuda_installed, nvidia_driver
    from cnn_pipeline.prepared import values_in_test_split

    predicted = values_in_test_split(paths.PREPARED_DIR) if arguments.command in TESTING else None
    os.environ.setdefault("KERAS_BACKEND", default_backend(predicted))
    # Keras's numpy backend runs convolutions on JAX, which first looks for a TPU and says it
    # found none in a line that reads as a failure ("Unable to initialize backend 'tpu'").
    # Without its CUDA plugin (the GPU install) JAX has only the CPU: it is told so, before
    # its import.
    if os.environ["KERAS_BACKEND"] in ("numpy", "jax") and not jax_cuda_installed():
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # TensorFlow's C++ notices: without an NVIDIA driver its only errors are its failing
    # look for CUDA and attributes its tf.data graphs carry ("use_unbounded_threadpool"),
    # noise that reads as failure; with a driver its errors may matter and still show.
    quiet = "3" if nvidia_driver() is None else "2"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", quiet)
    try:
        if arguments.command == "params":
            _compose(arguments)
        elif arguments.command == "promote":
            _promote(arguments)
        elif arguments.command == "predict":
            return _predict(arguments)
        elif arguments.command == "serve":
            return _serve(arguments)

        elif arguments.command == "tune":
            _tune(arguments)
        else:
            stage, _ = STAGES[arguments.command]
            stage(config.read_params(arguments.params), Path.cwd())
    except TrainingInterrupted as error:
        print(f"cnn-pipeline {arguments.command}: {error}", file=sys.stderr)
        return 130
    except UserError as error:
        print(f"cnn-pipeline {arguments.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cnn-pipeline {arguments.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
