"""Logging set-up for Karma's processes."""

from __future__ import annotations

import logging

CHATTY_LIBRARIES = ("aiokafka", "httpx", "temporalio", "kafka")


def configure_logging(level: str) -> None:
    """Karma's own loggers at `level`; libraries only from WARNING unless debugging."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", force=True
    )
    library_level = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(library_level, logging.getLevelNamesMapping()[level]))
