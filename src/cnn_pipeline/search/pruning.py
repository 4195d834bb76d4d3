"""The train stage's part in a search: a Keras callback that names the trial's MLflow run
(a child of the search's run), reports the validation metric to the Optuna trial after every
epoch, and stops training after an epoch when the pruner says the trial is hopeless.

A pruned trial ends as a finished training of fewer epochs: its model, metrics and history
are written, evaluate runs, and DVC keeps it as an experiment. Failing the stage instead
would make DVC drop the experiment, and with it the curves that show why it was stopped.
"""

from __future__ import annotations

import logging
from typing import Any

import keras

from cnn_pipeline.search.ticket import PRUNED_AT_ATTRIBUTE, PRUNED_TAG, TrialTicket

logger = logging.getLogger(__name__)


def open_trial(ticket: TrialTicket) -> Any:
    """The running Optuna trial the ticket names, with the study's own pruner."""
    import optuna

    from cnn_pipeline.search.storage import make_pruner, open_storage

    storage = open_storage(ticket.storage)
    study_id = storage.get_study_id_from_name(ticket.study)
    settings = storage.get_study_user_attrs(study_id)["pruner"]
    study = optuna.load_study(
        study_name=ticket.study, storage=storage, pruner=make_pruner(settings)
    )
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, ticket.trial_number)
    return optuna.trial.Trial(study, trial_id)


class TrialReporter(keras.callbacks.Callback):  # type: ignore[misc]
    def __init__(self, ticket: TrialTicket) -> None:
        super().__init__()
        self.ticket = ticket
        self.trial = open_trial(ticket)
        self.pruned_at: int | None = None

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        import mlflow

        tags = {
            "mlflow.runName": self.ticket.run_name,
            "search.study": self.ticket.study,
            "search.trial": str(self.ticket.trial_number),
        }
        if self.ticket.parent_run_id:
            tags["mlflow.parentRunId"] = self.ticket.parent_run_id  # nests it in `mlflow ui`
        mlflow.set_tags(tags)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        value = (logs or {}).get(self.ticket.metric)
        if value is None:
            return
        self.trial.report(float(value), step=epoch + 1)
        if self.trial.should_prune():
            import mlflow

            self.pruned_at = epoch + 1
            self.trial.set_user_attr(PRUNED_AT_ATTRIBUTE, self.pruned_at)
            mlflow.set_tag(PRUNED_TAG, "true")
            logger.info(
                "trial %s of search %s pruned after epoch %d (%s %.4f behind the others)",
                self.ticket.trial_number,
                self.ticket.study,
                self.pruned_at,
                self.ticket.metric,
                value,
            )
            self.model.stop_training = True
