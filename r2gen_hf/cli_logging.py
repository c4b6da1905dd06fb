"""Logging set-up shared by the command-line entry points (finetune.py, generate.py, data_prep, hub)."""

import logging

import transformers


def configure_logging(level: int | str = logging.INFO, show_time: bool = True) -> None:
    """Sends our logs and transformers' through one root handler, so that every message is printed once.

    transformers keeps its own handler and, when the `CI` environment variable is set, also lets records
    propagate to the root logger: with a root handler of our own, every Trainer line would then be
    printed twice. Here transformers' handler is removed and its records always propagate instead.
    """
    level = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    time = "%(asctime)s " if show_time else ""
    logging.basicConfig(format=f"{time}%(levelname)s %(name)s: %(message)s", level=level)
    transformers.utils.logging.set_verbosity(level)
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.enable_propagation()
