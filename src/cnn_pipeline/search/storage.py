"""The study's database and pruner, shared by the search (tune.py) and the train stage of
each trial (pruning.py): both open the same study the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnn_pipeline.errors import UserError, first_line

STORAGE_VARIABLE = "CNN_PIPELINE_SEARCH_STORAGE"  # a shared study's database URL


def open_storage(url: str) -> Any:
    """Optuna's database storage. SQLite waits up to a minute for a lock: the search and its
    trials' train stages write to one file at once."""
    import optuna

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as error:  # a bad URL, a database down, a missing driver
        raise UserError(
            f"cannot open the search's study storage {without_password(url)}: "
            f"{first_line(error)}; fix --storage or ${STORAGE_VARIABLE}"
        ) from None


def without_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":")[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def make_pruner(settings: dict[str, Any]) -> Any:
    """The study's pruner from the search file's `pruner` section: a trial whose best value
    so far is worse than the `percentile` of the finished trials at the same epoch stops."""
    import optuna

    if not settings["enabled"]:
        return optuna.pruners.NopPruner()
    return optuna.pruners.PercentilePruner(
        settings["percentile"],
        n_startup_trials=settings["startup_trials"],
        n_warmup_steps=settings["warmup_epochs"],
    )
