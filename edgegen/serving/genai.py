"""genai_config.json: what ONNX Runtime GenAI (onnxruntime-genai) reads to run a GPT package's
decoder with its own generation loop (docs/serving.md), and the overlay that runs a variant
`edgegen optimize` wrote instead of the fp32 decoder the file names.

edgegen's decoder graph has the inputs and outputs GenAI's decoder-only models name (input_ids,
attention_mask, position_ids, past_key_values.N.key/value -> logits, present.N.key/value), in
[batch, heads, sequence, head_dim] layout. GenAI 0.18 runs it as model type "llama": its "gpt2"
type expects another graph ("Model input was not found"), and the type only picks how GenAI
feeds the graph, not the layers inside it.

Runtime code: the standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError, PackageError, not_one_of
from ..package import GENAI_CONFIG, PRECISIONS, Package
from ..shipped import resolve

GENAI_MODEL_TYPE = "llama"


def genai_end_tokens(config) -> list[int] | None:
    """The end-of-text ids GenAI is given (it refuses one outside the vocabulary): the model's own
    within its vocabulary, since one outside it is never generated; for edgegen's byte-level GPT,
    which has none, token 0, the NUL byte, which text does not contain. None for another model
    with none inside its vocabulary: any id GenAI stopped at is one the model may generate, where
    edgegen and transformers go on to max_new_tokens."""
    ids = [i for i in (config.eos_token_id, *config.more_eos_token_ids) if i is not None and 0 <= i < config.vocab_size]
    if ids:
        return ids
    return [0] if config.tokenizer.get("kind") == "bytes" else None


def genai_config(config, graph_file: str) -> dict:
    """The config for a GPT package's runtime config (families/gpt GPTConfig) and decoder file
    (a model genai_end_tokens gives none is refused). Greedy search by default, as `edgegen
    generate --greedy`, or an imported model's generation_config.json's sampling settings
    (GPTConfig.generation_defaults)."""
    ends = genai_end_tokens(config)
    if ends is None:
        raise ConfigError(f"eos_token_id: expected an end-of-text token within the vocabulary (0 to "
                          f"{config.vocab_size - 1}) for ONNX Runtime GenAI, found "
                          f"{[config.eos_token_id, *config.more_eos_token_ids]}: any other id would end GenAI's text "
                          "where edgegen's and transformers' go on")
    pad = config.padding_id
    return {
        "model": {
            "type": GENAI_MODEL_TYPE,
            "context_length": config.block_size,
            "vocab_size": config.vocab_size,
            "bos_token_id": pad,   # GenAI requires one; edgegen's loop never inserts it (the prompt is as given)
            "eos_token_id": ends if len(ends) > 1 else ends[0],
            "pad_token_id": pad,
            "decoder": {
                "filename": graph_file,
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "head_size": config.head_dim,
                "hidden_size": config.n_embd,
                "num_attention_heads": config.n_head,
                "num_key_value_heads": config.cache_heads,
                "num_hidden_layers": config.n_layer,
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids",
                           "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        "search": {"do_sample": False, "num_beams": 1, "num_return_sequences": 1, "max_length": config.block_size,
                   "min_length": 0, "temperature": 1.0, "top_k": 1, "top_p": 1.0, "repetition_penalty": 1.0,
                   "past_present_share_buffer": False, "early_stopping": True, "length_penalty": 1.0,
                   "no_repeat_ngram_size": 0, "diversity_penalty": 0.0,
                   # an imported model's generation_config.json, as GenAI's builder carries it over
                   **{k: v for k, v in config.generation_defaults.items() if v is not None}},
    }


def write_genai_config(folder: str | Path, config, graph_file: str) -> Path | None:
    """genai_config.json in a package folder being written (the export's staging folder); for a
    model with no end-of-text token GenAI can take (genai_end_tokens), none, with a warning: the
    package runs in edgegen as it is."""
    from ..errors import ImportedSettingWarning, warn_caller
    from ..storage import atomic_write_text

    try:
        text = json.dumps(genai_config(config, graph_file), indent=2) + "\n"
    except ConfigError as exc:
        warn_caller(f"{GENAI_CONFIG} not written ({exc}); to run the package with GenAI, set eos_token_id to its "
                    "tokenizer's end-of-text token in the model's generation_config.json (read first) or config.json, "
                    "and import it again", ImportedSettingWarning)
        return None
    path = Path(folder) / GENAI_CONFIG
    atomic_write_text(path, text)
    return path


def genai_overlay(package, precision: str = "fp32") -> str:
    """The JSON that `og.Config.overlay` takes to run a GPT package's `precision` decoder: the
    variant's file and, for a variant that writes its KV cache in
    place, past and present sharing one buffer, as edgegen's loop runs it (GenAI's separate
    buffers fail in its TensorScatter). genai_config.json itself stays as exported, naming fp32's."""
    if precision not in PRECISIONS:
        raise ConfigError(not_one_of("precision", precision, PRECISIONS))
    pkg = Package(resolve(package))
    if pkg.family != "gpt":
        raise PackageError(f"package {str(pkg.path)!r}: expected a GPT package (ONNX Runtime GenAI runs text decoders), "
                           f"found a {pkg.family} package")
    if not (pkg.path / GENAI_CONFIG).is_file():
        raise PackageError(f"package {str(pkg.path)!r}: expected {GENAI_CONFIG} beside its decoder (the export writes "
                           f"it), found none (an import whose model has no end-of-text token in its vocabulary gets "
                           "none: its export said why)")
    pkg.require_variants(precision, PackageError)
    record = pkg.variant_files(precision).get("decoder") if precision != "fp32" else None
    # the only form a GPT decoder's variant takes for ONNX Runtime (families/gpt/cache_in_place.py)
    in_place = bool(record and record.get("ort_form"))
    decoder = {"filename": record["file"] if record else pkg.manifest.graphs["decoder"].file}
    # GenAI's config cannot name an optimizer to turn off: onnxruntime-genai 0.18 refused the int8
    # variant at load without the basic level, and ran it with it
    if level := pkg.level_without_disabled(precision, "decoder"):
        decoder["session_options"] = {"graph_optimization_level": f"ORT_ENABLE_{level.upper()}"}
    return json.dumps({"model": {"decoder": decoder}, "search": {"past_present_share_buffer": in_place}})
