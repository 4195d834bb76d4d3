"""Compose conf/ into params.yaml the way `dvc exp run` does, for `dvc repro` users."""

from __future__ import annotations

from pathlib import Path


def compose_params(config_dir: Path, overrides: list[str]) -> str:
    """Return the YAML text DVC would write to params.yaml for these Hydra overrides.

    DVC 3.67 (dvc/utils/hydra.py) composes with Hydra, resolves interpolations, and writes
    `OmegaConf.to_yaml(cfg)`; doing the same keeps `dvc exp run` from rewriting params.yaml
    when nothing changed.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from cnn_pipeline.errors import UserError, first_line

    try:
        with initialize_config_dir(str(config_dir.resolve()), version_base=None):
            config = compose(config_name="config", overrides=overrides)
        OmegaConf.resolve(config)
    except (HydraException, OmegaConfBaseException) as error:
        raise UserError(
            f"cannot compose {config_dir} with {overrides}: {first_line(error)}"
        ) from None
    return OmegaConf.to_yaml(config)
