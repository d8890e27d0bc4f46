"""transformers and diffusers kept quiet where edgegen's own output says it better."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from typing import Iterator

# transformers' notice, once per image-processor class, that it falls back from torchvision: diffusers'
# pipeline classes import CLIP's image processor, which edgegen never runs
TORCHVISION_NOTICE_LOGGER = "transformers.utils.import_utils"


class _TorchvisionNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


@contextlib.contextmanager
def quiet_hugging_face(libraries: tuple[str, ...] = ("transformers", "diffusers")) -> Iterator[None]:
    """For the block: transformers' and diffusers' progress bars off (an export's own progress line
    says where it is; their "Loading weights" and "Writing model shards" bars interleaved with it)
    and the torchvision notice dropped. Their other warnings stay."""
    bars, notice = [], _TorchvisionNotice()
    logging.getLogger(TORCHVISION_NOTICE_LOGGER).addFilter(notice)
    try:   # from here: a library whose import fails leaves the others' bars as they were
        for library in libraries:   # only those the block uses: importing diffusers takes seconds
            if importlib.util.find_spec(library) is None:
                continue
            hub_logging = importlib.import_module(f"{library}.utils.logging")
            if hub_logging.is_progress_bar_enabled():
                hub_logging.disable_progress_bar()
                bars.append(hub_logging)
        yield
    finally:
        logging.getLogger(TORCHVISION_NOTICE_LOGGER).removeFilter(notice)
        for hub_logging in bars:
            hub_logging.enable_progress_bar()
