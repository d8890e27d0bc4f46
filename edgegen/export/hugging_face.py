"""transformers and diffusers kept quiet where edgegen's own output says it better, and the
tokenizer transformers builds from a checkpoint's files."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from pathlib import Path
from typing import Iterator

from ..errors import CheckpointError, described
from ..package import read_json

# transformers' notice, once per image-processor class, that it falls back from torchvision: diffusers'
# pipeline classes import CLIP's image processor, which edgegen never runs
TORCHVISION_NOTICE_LOGGER = "transformers.utils.import_utils"
# transformers 5's table of a load's missing and unexpected weights (GPT-2's attn.masked_bias buffers), in
# terminal bold: the import's own checks say what matters (the logits against transformers', a weight
# that did not load)
LOAD_REPORT_LOGGER = "transformers.modeling_utils"
DROPPED = ((TORCHVISION_NOTICE_LOGGER, "requires torchvision (not installed)"), (LOAD_REPORT_LOGGER, "LOAD REPORT"))


class _Dropped(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


IMPORTING_LIBRARIES = ("transformers", "tokenizers", "diffusers")


def importing_versions() -> dict[str, str]:
    """{library: version} of the Hugging Face libraries installed, among which an import's reader of
    a folder is: a package records them, since transformers' reading of a folder (its tokenizer's,
    for one) changes between versions."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in IMPORTING_LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


@contextlib.contextmanager
def quiet_hugging_face(libraries: tuple[str, ...] = ("transformers", "diffusers")) -> Iterator[None]:
    """For the block: transformers' and diffusers' progress bars off (an export's own progress line
    says where it is; their "Loading weights" and "Writing model shards" bars interleaved with it),
    and the torchvision notice and transformers' load report dropped (DROPPED). Their other
    warnings stay."""
    bars, dropped = [], [(logging.getLogger(name), _Dropped(text)) for name, text in DROPPED]
    for logger, text_filter in dropped:
        logger.addFilter(text_filter)
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
        for logger, text_filter in dropped:
            logger.removeFilter(text_filter)
        for hub_logging in bars:
            hub_logging.enable_progress_bar()


def transformers_tokenizer(source: Path, class_name: str | None = None):
    """The tokenizers.Tokenizer transformers builds from the folder `source` (AutoTokenizer's, or
    the class `class_name` names, as a diffusers pipeline's model_index.json names it): the one its
    `tokenizer(text)` encodes with, without truncation and padding, which `tokenizer(text)` does
    not apply. Never the folder's own code (trust_remote_code stays off: transformers would ask on
    the terminal, then run it). CheckpointError where transformers cannot build it."""
    import transformers

    # a slow class (transformers 4's CLIPTokenizer) has no tokenizers backend: its fast twin encodes alike
    loader = (getattr(transformers, f"{class_name}Fast", None) or getattr(transformers, class_name, None)
              if isinstance(class_name, str) else transformers.AutoTokenizer)
    try:
        if loader is None:
            raise ValueError(f"transformers has no class {class_name}")
        with quiet_hugging_face(("transformers",)):
            chosen = {} if isinstance(class_name, str) else {"trust_remote_code": False}   # AutoTokenizer's option
            backend = loader.from_pretrained(str(source), **chosen).backend_tokenizer
    except Exception as exc:  # noqa: BLE001 - transformers' own errors, said in one line
        raise CheckpointError(f"{source}: expected a tokenizer transformers builds (prompts are encoded as its "
                              f"tokenizer(text) encodes them), found it failing: {described(exc)}") from None
    backend.no_truncation()
    backend.no_padding()
    return backend


def special_token(settings: dict, key: str, default: str | None = None) -> str | None:
    """A special token of tokenizer_config.json (or special_tokens_map.json): a string, or (Stable
    Diffusion 1.x's files, older transformers') an AddedToken object {"__type": "AddedToken",
    "content": ...}; `default` where the file names none."""
    value = settings.get(key) or default
    if isinstance(value, dict):
        value = value.get("content", default)
    return None if value is None else str(value)


def named_special_tokens(folder: Path, settings: dict, names: tuple[str, ...]) -> dict[str, str]:
    """The special tokens of `names` a checkpoint's tokenizer has, as text: tokenizer_config.json's
    (`settings`), a legacy save's special_tokens_map.json's over them where the config lists no
    added_tokens_decoder (as transformers 5 reads them)."""
    tokens = dict(settings)
    if "added_tokens_decoder" not in settings and (folder / "special_tokens_map.json").is_file():
        legacy = read_json(folder / "special_tokens_map.json", CheckpointError)
        tokens.update(legacy if isinstance(legacy, dict) else {})
    return {key: value for key in names if (value := special_token(tokens, key)) is not None}
