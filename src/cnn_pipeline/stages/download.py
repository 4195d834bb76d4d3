"""Download stage: write the configured dataset's raw files into data/raw/."""

from __future__ import annotations

import logging
from pathlib import Path

from cnn_pipeline import datasets
from cnn_pipeline.atomic import atomic_path
from cnn_pipeline.config import DataConfig
from cnn_pipeline.datasets.mirrors import RetryPolicy

logger = logging.getLogger(__name__)


def run(config: DataConfig, raw_dir: Path, policy: RetryPolicy | None = None) -> None:
    # The whole folder appears at once: a failed mirror or a bad checksum leaves no partial data.
    with atomic_path(raw_dir) as staged:
        datasets.fetch(config, staged, policy)
    logger.info("%s raw files in %s", config.name, raw_dir)
