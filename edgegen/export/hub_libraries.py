"""transformers and diffusers as the importers use them: quiet.

Their progress bars and notes (transformers 5's "Loading weights" and "Writing model shards"
bars, a note that an image processor falls back from torchvision to PIL) speak of their own
internals while edgegen reads or writes a folder of the user's, and edgegen's export says its
own progress; their errors still show, and raise.
"""

from __future__ import annotations

import contextlib
import importlib
import logging

LIBRARIES = ("transformers", "diffusers")


@contextlib.contextmanager
def quiet_hub_libraries():
    """Within: the installed ones of LIBRARIES without progress bars and below errors unlogged;
    after: each as it was (a caller's own settings kept)."""
    states = []
    for name in LIBRARIES:
        try:
            hub_logging = importlib.import_module(f"{name}.utils.logging")
        except ImportError:   # not installed: the import that needs it says so
            continue
        logger = logging.getLogger(name)
        states.append((hub_logging, hub_logging.is_progress_bar_enabled(), logger, logger.level))
        hub_logging.disable_progress_bar()
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for hub_logging, bars, logger, level in states:
            if bars:
                hub_logging.enable_progress_bar()
            logger.setLevel(level)
