"""Import a Hugging Face checkpoint directory (the `save_pretrained` layout) of GPT-2 or of the
Llama family (Llama, Qwen2, Mistral) into the GPT family's modules, so it goes through the
same export, gate and runtime as our own.

Reads config.json and the safetensors weights directly (transformers is needed only for
the scaled rotary-position variants, whose frequencies its own functions compute); when
transformers is installed the converted model is also checked against its model's logits
before anything is exported.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ...errors import CheckpointError, ImportedSettingWarning, InputError, ParityError, described, not_one_of
from ...export.hugging_face import named_special_tokens, quiet_hugging_face, transformers_tokenizer
from ...export.validate import compare
from ...package import files_sha256, read_json
from ...training.checkpoint import Checkpoint, make_config, save_pretrained_folder, state_dict_mismatch
from ...runtimes.chat import DEFAULT_TEMPLATE, SPECIAL_TOKEN_NAMES, template_problem
from ...runtimes.token_sampling import Sampling
from ...runtimes.tokenizer import BPETokenizer, ids_beyond
from .model import build

# where transformers saves a tokenizer's named chat templates beside chat_template.jinja (its CHAT_TEMPLATE_DIR)
ADDITIONAL_TEMPLATES = "additional_chat_templates"
LLAMA_TYPES = ("llama", "qwen2", "mistral")   # one decoder (llama.py) covers them
ARCHITECTURES = ("gpt2", *LLAMA_TYPES)
# rotary-position variants whose frequencies do not depend on the sequence's length below
# max_position_embeddings ("dynamic" rescales only beyond it, and block_size stops there)
ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
# transformers' generate()'s sampling defaults (GenerationConfig._get_default_generation_params), which a
# generation_config.json overrides: an imported package takes them as its own
TRANSFORMERS_SAMPLING = {"do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.0}
# generation_config.json settings that change a generation (greedy, or sampled: min_p, typical_p, the
# cutoffs) and that edgegen's generate has no counterpart for: {name: its values that change nothing}
_UNAPPLIED = {"no_repeat_ngram_size": (0,), "bad_words_ids": ([],), "suppress_tokens": ([],),
              "begin_suppress_tokens": ([],), "forced_bos_token_id": (), "forced_eos_token_id": (),
              "min_new_tokens": (0,), "min_length": (0,), "sequence_bias": ({},), "encoder_repetition_penalty": (1.0,),
              "min_p": (), "typical_p": (1.0,), "epsilon_cutoff": (0.0,), "eta_cutoff": (0.0,),
              # other decoding strategies (beam search, contrastive search), classifier-free guidance
              "num_beams": (1,), "num_beam_groups": (1,), "diversity_penalty": (0.0,), "penalty_alpha": (),
              "guidance_scale": (1.0,), "force_words_ids": ([],), "constraints": ([],),
              "exponential_decay_length_penalty": ()}
# ... and those edgegen's generate takes per call, never from the checkpoint: {name: (neutral values, its own)}
_PER_CALL = {"stop_strings": (([], ""), "stop"), "max_new_tokens": ((), "max_new_tokens"),
             "max_length": ((20,), "max_new_tokens")}
# GPT-2 name (after "transformer.") -> ours; Conv1D weights are stored [in, out], transposed here
_NAMES = {"attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj", "mlp.c_fc": "fc", "mlp.c_proj": "fc_out",
          "ln_1": "ln_1", "ln_2": "ln_2"}
_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def read_gpt2_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"transformers checkpoint {str(folder)!r}: expected config.json in it, found none")
    hf = read_json(path, CheckpointError)
    if not isinstance(hf, dict) or hf.get("model_type") != "gpt2":
        found = hf.get("model_type") if isinstance(hf, dict) else type(hf).__name__
        raise CheckpointError(f"{path}: expected model_type 'gpt2', found {found!r}")
    act = hf.get("activation_function", "gelu_new")
    n_embd = hf.get("n_embd", 768)
    unsupported = []
    if act not in _TANH_GELUS + ("gelu",):
        unsupported.append(f"activation_function {act!r} (expected one of {_TANH_GELUS + ('gelu',)})")
    if hf.get("n_inner") not in (None, 4 * n_embd):
        unsupported.append(f"n_inner {hf['n_inner']} (expected 4 * n_embd = {4 * n_embd})")
    if not hf.get("scale_attn_weights", True) or hf.get("scale_attn_by_inverse_layer_idx", False):
        unsupported.append("attention scaling other than 1/sqrt(head_dim)")
    if not hf.get("tie_word_embeddings", True):
        unsupported.append("untied output embeddings")
    unsupported += _quantized(hf)
    if unsupported:
        raise CheckpointError(f"{path}: expected a standard GPT-2, found " + "; ".join(unsupported))
    return hf   # a pad_token_id past the vocabulary is common here, and harmless: GPT-2's embedding has no padding_idx


def _quantized(hf: dict) -> list[str]:
    """A quantized checkpoint (GPTQ, AWQ, bitsandbytes: config.json's quantization_config), said as
    such: loading it for the check asked the user to install optimum or another quantizer."""
    settings = hf.get("quantization_config")
    if not settings:
        return []
    method = settings.get("quant_method", "unnamed") if isinstance(settings, dict) else settings
    return [f"quantization_config ({method!r}: quantized weights are not imported; import the float checkpoint and "
            "quantize it with edgegen optimize --precision int4 or int8-weights)"]


def _pad_id(hf: dict) -> int | None:
    """config.json's pad_token_id; a negative one (-1, early Llama conversions' "none") as none."""
    pad = hf.get("pad_token_id")
    return pad if isinstance(pad, int) and pad >= 0 else None


def _refuse_pad_outside_vocabulary(path: Path, hf: dict, vocab_size) -> None:
    """A pad token added to the tokenizer without resizing the model's embeddings leaves a
    pad_token_id past the vocabulary, which transformers itself cannot build a Llama-family model
    with (its embedding takes the pad as padding_idx; GPT-2's does not, and takes such a config)."""
    pad = hf.get("pad_token_id")
    if isinstance(pad, int) and isinstance(vocab_size, int) and pad >= vocab_size:   # -1: none
        raise CheckpointError(f"{path}: expected pad_token_id below vocab_size {vocab_size}, found {pad} (a pad "
                              "token added to the tokenizer, and not to the model: model.resize_token_embeddings("
                              "len(tokenizer)) before save_pretrained, or pad_token_id null)")


def _load_weights(folder: Path) -> tuple[dict[str, torch.Tensor], str]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index, CheckpointError)
        weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: expected a 'weight_map' naming the safetensors shards, found none")
        files = sorted(set(weight_map.values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        pickled = [p.name for p in folder.glob("*.bin")]
        raise CheckpointError(f"transformers checkpoint {str(folder)!r}: expected model.safetensors, found "
                              + (f"{pickled} (pickled weights are not loaded; load the model and save_pretrained it again, "
                                    "which writes safetensors; before transformers 5: safe_serialization=True)"
                                 if pickled else "no weights"))
    state = {}
    for name in files:
        if not (folder / name).is_file():   # a download cut short: the index names a shard not there
            raise CheckpointError(f"{index}: expected the shards its weight_map names, found {name} missing from "
                                  f"{str(folder)!r}")
        try:
            state.update(load_file(str(folder / name)))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{folder / name}: expected a safetensors file, found: {exc}") from None
    # one file: its own sha256; shards: the sha256 of their hashes in name order
    return state, files_sha256([folder / name for name in files])


def convert_state(hf_state: dict[str, torch.Tensor], n_layer: int) -> dict[str, torch.Tensor]:
    """GPT-2's tensors under our names; buffers (attn.bias masks) dropped, tied lm_head checked."""
    state = {k.removeprefix("transformer."): v for k, v in hf_state.items()}
    # a tensor the checkpoint lacks is left out here: the caller names what is missing against the model
    ours = {name: state.pop(name) for name in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias") if name in state}
    head = state.pop("lm_head.weight", None)
    if head is not None and "wte.weight" in ours and not torch.equal(head, ours["wte.weight"]):
        raise CheckpointError("lm_head.weight: expected the token embedding (tied weights), found a different matrix")
    for i in range(n_layer):
        for theirs, mine in _NAMES.items():
            for kind in ("weight", "bias"):
                tensor = state.pop(f"h.{i}.{theirs}.{kind}", None)
                if tensor is not None:
                    ours[f"blocks.{i}.{mine}.{kind}"] = (tensor.t().contiguous() if kind == "weight" and theirs in _CONV1D
                                                         else tensor)
    leftover = [k for k in state if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if leftover:
        raise CheckpointError(f"GPT-2 weights: expected only the standard tensors, found unknown {leftover[:5]}")
    return ours


def _tokenizer_file(folder: Path, scratch: Path) -> Path | None:
    """tokenizer.json as saved by a fast tokenizer, or one built from vocab.json + merges.txt: by
    transformers where it is installed, as its tokenizer(text) encodes (the architecture's own split
    pattern, Qwen2's digits one by one, and the special tokens tokenizer_config.json adds), else
    as GPT-2's byte-level BPE, with a warning that it may not be the folder's own."""
    if (folder / "tokenizer.json").is_file():
        return folder / "tokenizer.json"
    if not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()):
        return None
    if importlib.util.find_spec("transformers") is not None:
        with contextlib.suppress(CheckpointError):   # transformers cannot build it: GPT-2's form, said below
            transformers_tokenizer(folder).save(str(scratch / "tokenizer.json"))
            return scratch / "tokenizer.json"
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.save(str(scratch / "tokenizer.json"))
    warnings.warn(f"{str(folder / 'vocab.json')!r}: built as GPT-2's byte-level BPE without tokenizer_config.json's "
                  "added tokens (transformers, which builds it as the model's own, is not installed or failed on it): "
                  "another architecture's split pattern and special tokens in a prompt may be encoded otherwise; "
                  "save the tokenizer with transformers to get tokenizer.json", ImportedSettingWarning, stacklevel=4)
    return scratch / "tokenizer.json"


def _warn_where_transformers_splits_otherwise(folder: Path, tokenizer: Path) -> None:
    """The package keeps the folder's tokenizer as written. transformers 5 rebuilds a Llama or
    Mistral tokenizer.json with LlamaTokenizer's own pre-tokenizer instead (Metaspace, without the
    file's normalizer), which splits a prompt that starts with a space, or text after a special
    token, otherwise than the file and the sentencepiece model it came from; upstream treats that
    as a bug. Where the installed transformers splits a probe text otherwise, a warning shows both."""
    if importlib.util.find_spec("transformers") is None:
        return
    import transformers

    try:
        theirs = transformers_tokenizer(folder)
    except CheckpointError:   # a tokenizer transformers cannot build (a class of the folder's own code): nothing to compare
        return
    ours = BPETokenizer(tokenizer)._tokenizer
    special = [t.content for t in ours.get_added_tokens_decoder().values() if t.special][:1]
    for text in (" hello world", "  indented", *(f"x{token} y" for token in special)):
        mine, other = ours.encode(text), theirs.encode(text)
        if mine.ids != other.ids:
            warnings.warn(f"{_tokenizer_source(folder)}: transformers {transformers.__version__} splits {text!r} as "
                          f"{other.tokens}, the file as {mine.tokens}; the package keeps the file as written "
                          "(transformers 5 rebuilds a Llama or Mistral tokenizer with its own pre-tokenizer)",
                          ImportedSettingWarning, stacklevel=3)
            return


def _tokenizer_source(folder: Path) -> Path:
    """The user's file a tokenizer came from: tokenizer.json, else the vocab.json it was built from."""
    return folder / "tokenizer.json" if (folder / "tokenizer.json").is_file() else folder / "vocab.json"


def _imported(folder: Path, scratch: Path, architecture: str, hf: dict, config, convert) -> Checkpoint:
    """The checkpoint's weights (renamed by `convert`) in our module, checked against transformers,
    as a Checkpoint that carries its tokenizer files. Several end-of-text ids (Llama 3's, an
    instruct model's end of turn): the runtime stops at each."""
    tokenizer = _tokenizer_file(folder, scratch)   # refused before minutes of loading weights, not after
    if tokenizer is not None and (beyond := ids_beyond(tokenizer, config.vocab_size, added_tokens=False)):
        raise CheckpointError(f"{_tokenizer_source(folder)}: {beyond}")
    if tokenizer is not None:
        _warn_where_transformers_splits_otherwise(folder, tokenizer)
    hf_state, weights_sha = _load_weights(folder)
    model = build(config)
    state = convert(hf_state)
    if wrong := state_dict_mismatch(model, state):
        raise CheckpointError(f"{architecture} weights in {str(folder)!r}: expected the tensors config.json describes, "
                              f"found tensors {wrong}")
    model.load_state_dict(state, strict=True)
    del hf_state   # copied into the model: freed before transformers' own copy is loaded for the check
    model.eval()
    if tokenizer is None and (folder / "tokenizer.model").is_file():
        warnings.warn(f"{folder / 'tokenizer.model'}: a sentencepiece tokenizer, which edgegen does not read; the "
                      "package takes token ids only (save the tokenizer with transformers' fast tokenizer to get "
                      "a tokenizer.json)", ImportedSettingWarning, stacklevel=2)
    eos, defaults = _generation_settings(folder, hf)
    templates, chat = _chat_templates(folder, scratch) if tokenizer else ({}, {})   # text only: ids need none
    data = {"source": "transformers", "model_type": architecture, "tokenizer": "bpe" if tokenizer else "none",
            "eos_token_id": eos[0] if eos else None, "pad_token_id": _pad_id(hf),
            "more_eos_token_ids": eos[1:], "generation_defaults": defaults, "chat_templates": chat,
            "transformers_check": check_against_transformers(folder, model, config.vocab_size, config.block_size)}
    return Checkpoint(folder, "gpt", config, model, data, {}, weights_sha,
                      {**_tokenizer_files(folder, tokenizer), **templates})


def _generation_settings(folder: Path, hf: dict) -> tuple[list[int], dict]:
    """(the ids generation stops at, generate()'s defaults) as transformers' generate takes them:
    generation_config.json's eos_token_id where that file names one (an instruct model's end of
    turn is often only there), else config.json's; and its sampling settings over transformers'
    defaults (greedy; top-k 50 when sampling), which the package records as its generate()'s
    defaults. Settings of that file edgegen has no counterpart for are named in a warning."""
    eos, where, defaults = hf.get("eos_token_id"), folder / "config.json", dict(TRANSFORMERS_SAMPLING)
    path = folder / "generation_config.json"
    if path.is_file():
        generation = read_json(path, CheckpointError)
        if not isinstance(generation, dict):
            raise CheckpointError(f"{path}: expected a JSON object, found {type(generation).__name__}")
        if generation.get("eos_token_id") is not None:
            eos, where = generation["eos_token_id"], path
        for key in TRANSFORMERS_SAMPLING:   # each taken where the sampler takes it, as transformers only warns
            if generation.get(key) is not None:
                taken = {**defaults, key: generation[key]}
                try:
                    Sampling.checked(**taken)
                except InputError as exc:
                    warnings.warn(f"{path}: {exc}; the package takes transformers' default {defaults[key]!r}",
                                  ImportedSettingWarning, stacklevel=3)
                    continue
                if key != "do_sample" and not _samples_with(taken):   # greedy ignores it; --sample would not
                    warnings.warn(f"{path}: {key} {generation[key]!r}: expected a value sampling takes, found one only "
                                  "greedy decoding can take, since it ignores it (as transformers does, with a warning); "
                                  f"the package takes transformers' default {defaults[key]!r}, which sampling takes too",
                                  ImportedSettingWarning, stacklevel=3)
                    continue
                defaults[key] = generation[key]
        absent = {k: generation[k] for k, neutral in _UNAPPLIED.items() if generation.get(k) not in (None, *neutral)}
        if absent:
            warnings.warn(f"{path}: {', '.join(f'{k} {v!r}' for k, v in absent.items())}: transformers' generate "
                          "applies these by default; edgegen has no such settings and does not apply them",
                          ImportedSettingWarning, stacklevel=3)
        per_call = {k: generation[k] for k, (neutral, _) in _PER_CALL.items() if generation.get(k) not in (None, *neutral)}
        if per_call:
            own = sorted({_PER_CALL[k][1] for k in per_call})
            warnings.warn(f"{path}: {', '.join(f'{k} {v!r}' for k, v in per_call.items())}: transformers' generate "
                          f"applies these by default; edgegen's generate takes {' and '.join(own)} per call, not from "
                          "the checkpoint", ImportedSettingWarning, stacklevel=3)
    ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
        raise CheckpointError(f"{where}: expected eos_token_id to be an id or a list of ids, found {eos!r}")
    return ids, defaults


def _samples_with(settings: dict) -> bool:
    """Whether a call that samples takes these settings (a greedy package's defaults apply to one)."""
    try:
        Sampling.checked(**{**settings, "do_sample": True})
    except InputError:
        return False
    return True


def _tokenizer_files(folder: Path, tokenizer: Path | None) -> dict[str, Path]:
    """What the package holds beside its graphs: tokenizer.json, and tokenizer_config.json where
    the checkpoint has one (ONNX Runtime GenAI's tokenizer reads the two together)."""
    files = {"tokenizer.json": tokenizer} if tokenizer else {}
    if tokenizer and (folder / "tokenizer_config.json").is_file():
        files["tokenizer_config.json"] = folder / "tokenizer_config.json"
    return files


def _chat_templates(folder: Path, scratch: Path) -> tuple[dict[str, Path], dict]:
    """The folder's chat templates as transformers reads them ({package file: its text written to
    `scratch`}, {"templates": {name: package file}, "special_tokens": {name: text}}):
    chat_template.jinja and additional_chat_templates/NAME.jinja where either is there, else
    tokenizer_config.json's chat_template (one template, or a list of named ones); each checked
    as text and as Jinja here, not at a first conversation on a device. The special tokens a
    template reads are tokenizer_config.json's (hugging_face.named_special_tokens)."""
    config_path = folder / "tokenizer_config.json"
    settings = read_json(config_path, CheckpointError) if config_path.is_file() else {}
    settings = settings if isinstance(settings, dict) else {}
    files = [(DEFAULT_TEMPLATE, folder / "chat_template.jinja")] if (folder / "chat_template.jinja").is_file() else []
    files += [(file.stem, file) for file in sorted((folder / ADDITIONAL_TEMPLATES).glob("*.jinja"))]
    texts = ({name: _template_text(file) for name, file in files} if files
             else _templates_in_tokenizer_config(config_path, settings.get("chat_template")))
    paths, names = {}, {}
    for name, text in texts.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):   # becomes part of a file name in the package
            warnings.warn(f"{str(folder)!r}: chat template {name!r} left out (expected a name of letters, digits, '-' "
                          "and '_')", ImportedSettingWarning, stacklevel=4)
            continue
        if problem := template_problem(text):
            raise CheckpointError(f"{str(folder)!r}: chat template {name!r}: expected a Jinja template, found {problem}")
        file = "chat_template.jinja" if name == DEFAULT_TEMPLATE else f"chat_template.{name}.jinja"
        (scratch / file).write_text(text, encoding="utf-8")
        paths[file], names[name] = scratch / file, file
    if not names:
        return {}, {}
    return paths, {"templates": names, "special_tokens": named_special_tokens(folder, settings, SPECIAL_TOKEN_NAMES)}


def _template_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path}: expected a chat template in UTF-8 text, found byte {exc.object[exc.start]:#x} at "
                              f"{exc.start}") from None


def _templates_in_tokenizer_config(path: Path, value) -> dict[str, str]:
    """tokenizer_config.json's chat_template: {name: Jinja text}."""
    if value is None:
        return {}
    if isinstance(value, str):
        return {DEFAULT_TEMPLATE: value}
    if isinstance(value, list) and all(isinstance(t, dict) and isinstance(t.get("name"), str)
                                       and isinstance(t.get("template"), str) for t in value):
        return {t["name"]: t["template"] for t in value}
    raise CheckpointError(f"{path}: expected chat_template to be a Jinja template or a list of "
                          f"{{'name', 'template'}} objects, found {value!r:.80}")


def check_against_transformers(folder: Path, model, vocab_size: int, context: int) -> str:
    """Our converted module's logits against transformers' own model's on the same ids (24 of
    them, or the whole context where it is shorter)."""
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        return "skipped: transformers is not installed"
    # in float32 whatever the checkpoint's dtype: our module holds the weights in float32 too
    try:
        with quiet_hugging_face(("transformers",)):
            reference = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    except Exception as exc:  # noqa: BLE001 - what transformers cannot load, it cannot vouch for: one line, not its traceback
        raise CheckpointError(f"{str(folder)!r}: expected a checkpoint transformers loads, to check the import against, "
                              f"found it failing: {described(exc)}") from None
    length = min(24, context)
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, vocab_size, (2, length)))
    with torch.inference_mode():
        theirs = reference(ids).logits.numpy()
        ours = model(ids, torch.arange(length).expand(2, length), torch.ones_like(ids), *model.empty_past(2))[0].numpy()
    # two float32 forward passes on one CPU differ by about 1e-5 of the logits' magnitude, from run to run
    # too (a GEMM's path can hang on memory alignment): near zero that passed or failed a fixed 1e-4 by
    # chance, so the tolerance scales with the logits' range; a wrong conversion is off by far more
    scale = max(1.0, float(np.abs(theirs).max()))
    result = compare("logits", 2, ours, theirs, atol=1e-4 * scale, rtol=1e-3)
    if not result.passed:
        raise ParityError(f"import of {str(folder)!r} does not reproduce transformers: {result.line()}")
    return f"matches transformers {type(reference).__name__} (max abs diff {result.max_abs:.2g})"


def import_gpt2(folder: str | Path, scratch: Path) -> Checkpoint:
    """A Checkpoint of our GPT holding the GPT-2 weights; a built tokenizer goes to `scratch`."""
    folder = save_pretrained_folder(folder, "transformers checkpoint")
    hf = read_gpt2_config(folder)
    n_layer = hf.get("n_layer", 12)
    config = make_config("gpt", {
        "vocab_size": hf.get("vocab_size", 50257), "block_size": hf.get("n_positions", 1024), "n_layer": n_layer,
        "n_head": hf.get("n_head", 12), "n_embd": hf.get("n_embd", 768),
        "gelu": "none" if hf.get("activation_function", "gelu_new") == "gelu" else "tanh",
        "layer_norm_eps": float(hf.get("layer_norm_epsilon", 1e-5)), "train_context": min(128, hf.get("n_positions", 1024)),
    })
    return _imported(folder, scratch, "gpt2", hf, config, lambda state: convert_state(state, n_layer))


# -- the Llama family ------------------------------------------------------------------------------

def read_llama_config(folder: Path, architecture: str) -> dict:
    """config.json of a Llama, Qwen2 or Mistral checkpoint, refused where our decoder differs."""
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"transformers checkpoint {str(folder)!r}: expected config.json in it, found none")
    hf = read_json(path, CheckpointError)
    found = hf.get("model_type") if isinstance(hf, dict) else type(hf).__name__
    if found != architecture:
        raise CheckpointError(f"{path}: expected model_type {architecture!r}, found {found!r}")
    _refuse_mistyped_settings(path, hf)
    unsupported = []
    if hf.get("hidden_act", "silu") != "silu":
        unsupported.append(f"hidden_act {hf['hidden_act']!r} (expected 'silu')")
    if biases := [key for key in ("attention_bias", "mlp_bias") if hf.get(key)]:
        unsupported.append(f"{' and '.join(f'{key} true' for key in biases)} (biases on the attention's "
                           "projections or the MLP; Qwen2's q/k/v biases are taken)")
    rope_type = rope_parameters(hf).get("rope_type", "default")
    if rope_type not in ROPE_TYPES:
        unsupported.append(f"rope type {rope_type!r} (expected one of {', '.join(ROPE_TYPES)})")
    unsupported += _quantized(hf)
    if unsupported:
        raise CheckpointError(f"{path}: expected a standard {architecture}, found " + "; ".join(unsupported))
    _refuse_pad_outside_vocabulary(path, hf, hf.get("vocab_size", 32000))
    return hf


def rope_parameters(hf: dict) -> dict:
    """The rotary-position settings: transformers 5's `rope_parameters`, or the older
    `rope_theta` and `rope_scaling` (whose "type" is the later "rope_type")."""
    params = dict(hf.get("rope_parameters") or {})
    if not params:
        params = {**(hf.get("rope_scaling") or {}), "rope_theta": hf.get("rope_theta", 10000.0)}
    params.setdefault("rope_type", params.pop("type", "default"))
    return params


def _rope_frequencies(folder: Path, rope: dict) -> tuple[list | None, float]:
    """The inverse frequencies and cos/sin scaling of a scaled variant, as transformers computes
    them; the default variant is computed by the module itself from rope_theta."""
    if rope["rope_type"] == "default":
        return None, 1.0
    try:
        from transformers import AutoConfig
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    except ImportError:
        raise CheckpointError(f"rope type {rope['rope_type']!r} of {str(folder)!r}: its frequencies come from "
                              "transformers' own functions: pip install transformers") from None
    try:
        inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope["rope_type"]](AutoConfig.from_pretrained(str(folder)))
    except Exception as exc:  # noqa: BLE001 - a setting the variant needs, missing or mistyped ("factor"): one line
        raise CheckpointError(f"rope type {rope['rope_type']!r} of {str(folder / 'config.json')!r}: expected the settings "
                              f"transformers computes its frequencies from, found it failing: {described(exc)}") from None
    return [float(f) for f in inv_freq], float(scaling)


def convert_llama_state(hf_state: dict[str, torch.Tensor], tied: bool) -> dict[str, torch.Tensor]:
    """transformers' names without "model."; a tied lm_head checked and dropped."""
    state = {k.removeprefix("model."): v for k, v in hf_state.items() if not k.endswith("rotary_emb.inv_freq")}
    head = state.get("lm_head.weight")
    if tied and head is not None and "embed_tokens.weight" in state:
        if not torch.equal(head, state["embed_tokens.weight"]):
            raise CheckpointError("lm_head.weight: expected the token embedding (tie_word_embeddings), found another matrix")
        del state["lm_head.weight"]
    return state


def _sliding_window(hf: dict, architecture: str) -> int | None:
    """The sliding window some layer of the model attends through, as transformers reads the config:
    Mistral's wherever sliding_window is set (its model never reads use_sliding_window); Qwen2's
    where use_sliding_window is true, in the layers config.json's layer_types names
    "sliding_attention", or where it has none, from layer max_window_layers (default 28) on."""
    window = hf.get("sliding_window")
    if architecture == "mistral" or window is None:
        return window
    layers = hf.get("layer_types")
    if not isinstance(layers, list):
        layers = ["sliding_attention" if i >= hf.get("max_window_layers", 28) else "full_attention"
                  for i in range(hf["num_hidden_layers"])]
    return window if hf.get("use_sliding_window") and "sliding_attention" in layers else None


# config.json's optional settings and what each must be where given: a string or a negative size
# failed in float(), min() or torch, with a traceback that called itself edgegen's bug
POSITIVE_SIZES = ("num_key_value_heads", "head_dim", "max_position_embeddings", "sliding_window")
LAYER_COUNTS = ("max_window_layers",)   # Qwen2's first sliding layer: 0, every one
POSITIVE_NUMBERS = ("rms_norm_eps", "rope_theta")
SETTING_TABLES = ("rope_parameters", "rope_scaling")


def _refuse_mistyped_settings(path: Path, hf: dict) -> None:
    """Each optional setting of config.json that is given as what it cannot be, named with its value."""
    wrong = [f"{key} a {'positive' if key in POSITIVE_SIZES else 'non-negative'} integer, found {hf[key]!r}"
             for key in (*POSITIVE_SIZES, *LAYER_COUNTS) if hf.get(key) is not None
             and (isinstance(hf[key], bool) or not isinstance(hf[key], int) or hf[key] < (key in POSITIVE_SIZES))]
    wrong += [f"{key} a positive number, found {hf[key]!r}" for key in POSITIVE_NUMBERS if hf.get(key) is not None
              and (isinstance(hf[key], bool) or not isinstance(hf[key], (int, float)) or not 0 < hf[key] < math.inf)]
    wrong += [f"{key} a table of settings, found {hf[key]!r}" for key in SETTING_TABLES
              if hf.get(key) is not None and not isinstance(hf[key], dict)]
    theta = (hf.get("rope_parameters") or {}).get("rope_theta") if not wrong else None
    if theta is not None and (isinstance(theta, bool) or not isinstance(theta, (int, float)) or not 0 < theta < math.inf):
        wrong.append(f"rope_parameters' rope_theta a positive number, found {theta!r}")
    heads, kv = hf.get("num_attention_heads"), hf.get("num_key_value_heads")
    if not wrong and isinstance(heads, int) and isinstance(kv, int) and heads % kv:
        wrong.append(f"num_key_value_heads a divisor of num_attention_heads {heads} (grouped-query attention shares "
                     f"each key/value head among as many query heads), found {kv}")
    if wrong:
        raise CheckpointError(f"{path}: expected " + "; ".join(wrong))


def import_llama(folder: str | Path, scratch: Path, architecture: str = "llama") -> Checkpoint:
    """A Checkpoint of the llama architecture holding a Llama, Qwen2 or Mistral checkpoint's weights."""
    folder = save_pretrained_folder(folder, "transformers checkpoint")
    hf = read_llama_config(folder, architecture)
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
               if not isinstance(hf.get(k), int)]
    if missing:
        raise CheckpointError(f"{folder / 'config.json'}: expected integer {', '.join(missing)} in it, found "
                              + ", ".join(repr(hf.get(k)) for k in missing))
    heads = hf["num_attention_heads"]
    rope = rope_parameters(hf)
    inv_freq, scaling = _rope_frequencies(folder, rope)
    # a sliding window at least as long as the context changes nothing; block_size stops at it
    window = _sliding_window(hf, architecture)
    context = min(hf.get("max_position_embeddings", 2048), window or 1 << 30)
    if context < hf.get("max_position_embeddings", 2048):   # said now, not first as a prompt refused later
        warnings.warn(f"{folder / 'config.json'}: sliding_window {window} caps the package's context at {context} tokens, "
                      f"below max_position_embeddings {hf.get('max_position_embeddings', 2048)}: edgegen attends to "
                      "every token, so no sequence may pass the window", ImportedSettingWarning, stacklevel=3)
    tied = bool(hf.get("tie_word_embeddings", False))
    config = make_config("gpt", {
        "architecture": "llama", "vocab_size": hf["vocab_size"], "block_size": context,
        "n_layer": hf["num_hidden_layers"], "n_head": heads, "n_embd": hf["hidden_size"],
        "n_kv_head": hf.get("num_key_value_heads") or heads, "head_size": hf.get("head_dim"),
        "intermediate_size": hf["intermediate_size"], "layer_norm_eps": float(hf.get("rms_norm_eps", 1e-6)),
        "rope_theta": float(rope.get("rope_theta", 10000.0)), "rope_inv_freq": inv_freq,
        "rope_attention_scaling": scaling, "qkv_bias": architecture == "qwen2", "tie_embeddings": tied,
        "train_context": min(128, context),
    })
    return _imported(folder, scratch, architecture, hf, config, lambda state: convert_llama_state(state, tied))


def import_transformers(architecture: str, folder: str | Path, scratch: Path) -> Checkpoint:
    """A gpt2, llama, qwen2 or mistral save_pretrained folder as a checkpoint of this family (its
    tokenizer file put in `scratch`); `edgegen export ARCH --from-transformers DIR` exports it."""
    if architecture not in ARCHITECTURES:
        raise CheckpointError(not_one_of("architecture", architecture, ARCHITECTURES,
                                         "the ones edgegen imports from transformers"))
    return import_gpt2(folder, scratch) if architecture == "gpt2" else import_llama(folder, scratch, architecture)


__all__ = ["import_gpt2", "import_llama", "import_transformers", "convert_state", "read_gpt2_config"]
