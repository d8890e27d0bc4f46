"""The GPT family: training on the standard library's source, the decoder graph's KV-cache
contract, the runtime's generation loop against PyTorch and transformers, sampling options."""

import copy
import importlib.util
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import edgegen
from edgegen.cli import main
from edgegen.errors import BackendError, CheckpointError, ConfigError, DataError, ImportedSettingWarning, InputError, \
    ManifestError, MissingExtraError, PackageError
from edgegen.export import export_checkpoint, export_model, export_transformers
from edgegen.families.gpt.hf_import import import_gpt2
from edgegen.training.checkpoint import load_checkpoint, save_checkpoint
from edgegen.training.text import HELD_OUT_EVERY, load_text, read_corpus, stdlib_files
from edgegen.training.train import train
from edgegen.package import Package, sha256_file
from edgegen.families.gpt.pipeline import CacheBudgetError
from edgegen.runtimes.token_sampling import Sampling, next_tokens

NEW_TOKENS = 120
TINY = dict(n_layer=2, n_embd=64, n_head=4, block_size=256, train_context=64)


@pytest.fixture(scope="module")
def gpt(tmp_path_factory):
    """A small byte-level GPT trained briefly on the stdlib, exported at opset 23 and 18."""
    root = tmp_path_factory.mktemp("gpt")
    trained = load_checkpoint(train("gpt", root / "trained", steps=150, batch_size=16, progress=False, **TINY))
    # A briefly trained byte model barely uses its position embeddings; make them matter,
    # so that a loop that feeds the wrong positions cannot pass the comparisons below.
    torch.manual_seed(0)
    with torch.no_grad():
        trained.model.wpe.weight.add_(torch.randn_like(trained.model.wpe.weight) * 0.5)
    ckpt = save_checkpoint(root / "ckpt", "gpt", trained.config, trained.model, trained.data, trained.training)
    return {"ckpt": ckpt, "model": load_checkpoint(ckpt).model,
            "pkg": export_checkpoint(ckpt, root / "pkg23"), "pkg18": export_checkpoint(ckpt, root / "pkg18", opset=18)}


def test_stdlib_corpus_is_read_at_run_time_and_split_by_file():
    import sysconfig

    files = stdlib_files()
    assert len(files) > 100 and all(str(f).startswith(sysconfig.get_paths()["stdlib"]) for f in files)
    assert not any({"test", "tests", "idlelib"} & set(f.parts) for f in files)
    train_bytes, test_bytes = read_corpus("stdlib")
    held_out = files[HELD_OUT_EVERY - 1].read_bytes()   # every 20th file is held out, whole
    trained_on = files[0].read_bytes()
    assert held_out in test_bytes and held_out not in train_bytes
    assert trained_on in train_bytes and trained_on not in test_bytes
    data = load_text("stdlib", context=32)
    assert data.train.shape[1] == 33 and data.train.dtype == np.int64
    assert data.train.max() < 256 and data.test_tokens == len(test_bytes)


def test_user_text_file_trains_and_bad_data_is_refused(tmp_path):
    text = tmp_path / "poem.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 400, encoding="utf-8")
    ckpt = train("gpt", tmp_path / "ckpt", data=str(text), steps=3, batch_size=4, progress=False, **TINY)
    assert load_checkpoint(ckpt).data["source"] == str(text)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"caf\xe9 " * 2000)
    with pytest.raises(DataError, match="UTF-8"):
        train("gpt", tmp_path / "x", data=str(bad), steps=1, progress=False, **TINY)
    with pytest.raises(DataError, match="stdlib"):
        train("gpt", tmp_path / "y", data=str(tmp_path / "missing.txt"), steps=1, progress=False, **TINY)
    with pytest.raises(ConfigError, match="n_embd"):
        train("gpt", tmp_path / "z", steps=1, progress=False, **{**TINY, "n_embd": 66})
    # fine-tuned on other text: the checkpoint's architecture and training windows, none given again
    other = tmp_path / "other.txt"
    other.write_text("def f(x):\n    return x + 1\n" * 300, encoding="utf-8")
    short = train("gpt", tmp_path / "short", data=str(text), steps=1, batch_size=4, progress=False,
                  **{**TINY, "block_size": 32, "train_context": 16})
    tuned = load_checkpoint(train("gpt", tmp_path / "tuned", data=str(other), init=short, steps=2, batch_size=4,
                                  progress=False))
    assert (tuned.config.n_layer, tuned.config.block_size, tuned.config.train_context) == (2, 32, 16)
    assert tuned.data["source"] == str(other) and tuned.training["init"]["steps"] == 1
    # an option at odds with the start's others is said as the option given, not the one carried over
    grouped = train("gpt", tmp_path / "grouped", data=str(text), steps=1, batch_size=4, progress=False,
                    **{**TINY, "architecture": "llama", "n_kv_head": 1})
    with pytest.raises(ConfigError, match=r"^--init '.*grouped': expected options that fit the checkpoint's architecture, "
                                          r"found architecture 'llama' -> 'gpt2', which its other settings do not take"):
        train("gpt", tmp_path / "w", data=str(other), init=grouped, steps=1, progress=False, architecture="gpt2")


def test_decoder_graph_has_the_kv_cache_contract_and_fused_attention(gpt):
    package = Package(gpt["pkg"])
    entry = package.graphs["decoder"]
    names = [t.name for t in entry.inputs]
    assert names[:3] == ["input_ids", "position_ids", "attention_mask"]
    assert names[3:] == [f"past_key_values.{i}.{kv}" for i in range(2) for kv in ("key", "value")]
    assert entry.inputs[3].shape == ("batch", 4, "past_sequence_length", 16)
    assert [t.name for t in entry.outputs] == ["logits"] + [f"present.{i}.{kv}" for i in range(2) for kv in ("key", "value")]
    assert entry.extra["validation"]["passed"]
    ops23 = {n.op_type for n in onnx.load(str(package.graph_path("decoder"))).graph.node}
    ops18 = {n.op_type for n in onnx.load(str(Package(gpt["pkg18"]).graph_path("decoder"))).graph.node}
    assert "Attention" in ops23
    assert "Attention" not in ops18 and {"MatMul", "Softmax"} <= ops18


def test_the_prompt_call_computes_only_the_last_positions_logits_and_old_packages_still_generate(gpt, tmp_path):
    """logits_to_keep: an input the graph defaults to 0 (every position, what GenAI, TensorRT and
    the teacher-forced gates read), that the generation loop sets to 1 (the head's MatMul on the
    last position only), checked against PyTorch by the export's gate."""
    from edgegen.families.gpt.pipeline import LOGITS_TO_KEEP

    package = Package(gpt["pkg"])
    pipe = edgegen.load(gpt["pkg"], backend="ort-cpu")
    session = pipe.decoder.inference_session
    assert LOGITS_TO_KEEP in {i.name for i in session.get_overridable_initializers()}
    assert LOGITS_TO_KEEP not in {t.name for t in package.graphs["decoder"].inputs}   # not a required input
    ids = np.array([list(b"def __init__(self")], np.int64)
    empty = np.zeros((1, 4, 0, 16), np.float32)
    feeds = {"input_ids": ids, "position_ids": np.arange(ids.shape[1])[None], "attention_mask": np.ones_like(ids),
             **{f"past_key_values.{i}.{kv}": empty for i in range(2) for kv in ("key", "value")}}
    every = session.run(["logits"], feeds)[0]
    last = session.run(["logits"], {**feeds, LOGITS_TO_KEEP: np.array([1], np.int64)})[0]
    assert every.shape == (1, ids.shape[1], 256) and last.shape == (1, 1, 256)
    np.testing.assert_allclose(last[0, 0], every[0, -1], rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        reference = gpt["model"](*(torch.from_numpy(feeds[k]) for k in ("input_ids", "position_ids", "attention_mask")),
                                 *(torch.from_numpy(empty) for _ in range(4)))[0]
    np.testing.assert_allclose(every, reference.numpy(), rtol=1e-3, atol=1e-4)
    assert pipe.logits_bytes(1, 100) == 2 * 256 * 4

    # a package exported before the input existed: the loop takes every position's logits, as it did
    old = tmp_path / "old"
    shutil.copytree(gpt["pkg"], old)
    model = onnx.load(str(old / "decoder.onnx"))
    graph = model.graph
    slice_node = next(n for n in graph.node if n.op_type == "Slice" and n.output[0].endswith(".kept"))
    for node in graph.node:
        node.input[:] = [slice_node.input[0] if i == slice_node.output[0] else i for i in node.input]
    for node in [n for n in graph.node if n.name.startswith(LOGITS_TO_KEEP)]:
        graph.node.remove(node)
    for init in [i for i in graph.initializer if i.name.startswith(LOGITS_TO_KEEP)]:
        graph.initializer.remove(init)
    graph.input.remove(next(i for i in graph.input if i.name == LOGITS_TO_KEEP))
    onnx.save(model, str(old / "decoder.onnx"))
    manifest = json.loads((old / "edgegen.json").read_text())
    manifest["graphs"]["decoder"]["sha256"] = sha256_file(old / "decoder.onnx")
    (old / "edgegen.json").write_text(json.dumps(manifest))
    before = edgegen.load(old, backend="ort-cpu")
    assert not before._last_logits_only
    prompt = list(b"def __init__(self")
    assert before.generate(prompt, max_new_tokens=20, do_sample=False) == pipe.generate(prompt, max_new_tokens=20,
                                                                                         do_sample=False)


def test_a_pipeline_outlives_its_package_folder_and_says_what_it_cannot_read(gpt, tmp_path):
    """The sessions keep their graphs: generation runs on after the folder is removed. The bandwidth
    bound's byte count reads the graph file, and said so as Python's FileNotFoundError."""
    import shutil

    pipe = edgegen.load(shutil.copytree(gpt["pkg"], tmp_path / "pkg"))
    before = pipe.generate([1, 2, 3], max_new_tokens=4, do_sample=False)
    shutil.rmtree(tmp_path / "pkg")
    assert pipe.generate([1, 2, 3], max_new_tokens=4, do_sample=False) == before
    with pytest.raises(PackageError, match=r"^graph 'decoder' at '.*decoder\.onnx': expected the file this pipeline was "
                                           r"loaded from, found No such file or directory \(its package was moved"):
        pipe.decode_read_bytes(10)


def test_greedy_generation_equals_pytorch_greedy_loop(gpt):
    pipe = edgegen.load(gpt["pkg"], backend="ort-cpu")
    prompt = list(b"def __init__(self")
    ours = pipe.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False)
    assert ours == gpt["model"].greedy(prompt, NEW_TOKENS)
    assert len(ours) == NEW_TOKENS


def test_batch_of_three_prompts_of_different_lengths_left_padded(gpt):
    pipe = edgegen.load(gpt["pkg"], backend="ort-cpu")
    prompts = [list(b"im"), list(b"    return self._"), list(b"class Foo(object):\n    def")]
    ours = pipe.generate(prompts, max_new_tokens=NEW_TOKENS, do_sample=False)
    for prompt, row in zip(prompts, ours):
        assert row == gpt["model"].greedy(prompt, NEW_TOKENS)
    # the same through the loop without a cache, and through the opset-18 graph
    assert pipe.generate(prompts, max_new_tokens=40, do_sample=False, use_cache=False) == [r[:40] for r in ours]
    pipe18 = edgegen.load(gpt["pkg18"], backend="ort-cpu")
    assert pipe18.generate(prompts, max_new_tokens=NEW_TOKENS, do_sample=False) == ours


def _recording_widths(real_binding, widths: list):
    """A pipeline's _binding whose runs append the tokens each decoder call takes to `widths`
    (one entry per call)."""
    def binding():
        bound = real_binding()
        bind_input, run, width = bound.bind_input, bound.run, [0]

        def recording_bind(name, dtype, shape, address):
            if name == "input_ids":
                width[0] = shape[1]
            bind_input(name, dtype, shape, address)
        bound.bind_input = recording_bind
        bound.run = lambda: (widths.append(width[0]), run())[1]
        return bound
    return binding


@pytest.mark.parametrize("chunk", [5, 9, 13])
def test_a_long_prompt_prefilled_in_chunks_generates_as_pytorch(gpt, monkeypatch, chunk):
    """Prompts longer than PREFILL_CHUNK go through the decoder a chunk per call: prompts of 2, 17
    and 26 bytes in chunks of 5, 9 or 13 tokens, one chunk or several, the last one short or (26 =
    2 x 13) full, alone and left-padded in a batch."""
    monkeypatch.setattr("edgegen.families.gpt.pipeline.PREFILL_CHUNK", chunk)
    pipe = edgegen.load(gpt["pkg"], backend="ort-cpu")
    assert pipe._last_logits_only   # the graph has logits_to_keep: the loop chunks
    calls = []
    pipe._binding = _recording_widths(pipe._binding, calls)
    pipe.generate(list(b"class Foo(object):\n    def"), max_new_tokens=3, do_sample=False)
    assert len(calls) == -(-26 // chunk) + 2   # the prompt's chunks, then two one-token steps
    prompts = [list(b"im"), list(b"    return self._"), list(b"class Foo(object):\n    def")]
    for prompt in prompts:
        assert pipe.generate(prompt, max_new_tokens=30, do_sample=False) == gpt["model"].greedy(prompt, 30)
    batched = pipe.generate(prompts, max_new_tokens=30, do_sample=False)
    assert batched == [gpt["model"].greedy(prompt, 30) for prompt in prompts]


def test_text_in_text_out_and_stream_pieces_join_to_generate(gpt):
    pipe = edgegen.load(gpt["pkg"], backend="ort-cpu")
    text = pipe.generate("import ", max_new_tokens=60, seed=3, temperature=0.8)
    assert isinstance(text, str)
    assert "".join(pipe.stream("import ", max_new_tokens=60, seed=3, temperature=0.8)) == text
    ids = pipe.generate(list(b"import "), max_new_tokens=60, seed=3, temperature=0.8)
    assert bytes(ids).decode("utf-8", errors="replace") == text
    assert list(pipe.stream(list(b"import "), max_new_tokens=60, seed=3, temperature=0.8)) == ids
    batch = pipe.generate(["import ", "def "], max_new_tokens=10, seed=0)
    assert isinstance(batch, list) and len(batch) == 2 and all(isinstance(t, str) for t in batch)


def test_seeds_and_sampling_options(gpt):
    pipe = edgegen.load(gpt["pkg"], backend="ort-cpu")
    prompt = list(b"for i in ")
    a = pipe.generate(prompt, max_new_tokens=50, seed=1)
    assert a == pipe.generate(prompt, max_new_tokens=50, seed=1)
    assert a != pipe.generate(prompt, max_new_tokens=50, seed=2)
    greedy = pipe.generate(prompt, max_new_tokens=50, do_sample=False)
    assert pipe.generate(prompt, max_new_tokens=50, top_k=1, seed=5) == greedy
    assert pipe.generate(prompt, max_new_tokens=50, top_p=1e-6, seed=5) == greedy
    repeats = pipe.generate(prompt, max_new_tokens=50, do_sample=False, repetition_penalty=3.0)
    assert len(set(repeats)) > len(set(greedy))


def test_stop_strings_and_stop_ids(gpt):
    pipe = edgegen.load(gpt["pkg"], backend="ort-cpu")
    full = pipe.generate("def ", max_new_tokens=80, do_sample=False)
    stop = full[10:13]
    cut = pipe.generate("def ", max_new_tokens=80, do_sample=False, stop=stop)
    assert cut == full[:full.index(stop)]
    assert "".join(pipe.stream("def ", max_new_tokens=80, do_sample=False, stop=stop)) == cut
    ids = pipe.generate(list(b"def "), max_new_tokens=80, do_sample=False)
    stopped = pipe.generate(list(b"def "), max_new_tokens=80, do_sample=False, stop=ids[5])
    assert stopped == ids[:ids.index(ids[5]) + 1]
    # two stop strings complete on one token: the text is cut where the first in the text starts,
    # whichever is listed first (in list order, the one-character stop kept the others' start)
    k = next(i for i in range(4, len(full)) if full[i] not in full[:i])   # its character's first time
    for stop in ([full[k], full[k - 3:k + 1]], [full[k - 3:k + 1], full[k]]):
        assert pipe.generate("def ", max_new_tokens=80, do_sample=False, stop=stop) == full[:k - 3]
        assert "".join(pipe.stream("def ", max_new_tokens=80, do_sample=False, stop=stop)) == full[:k - 3]
    # a stop id's shown text completing a stop string is cut at it too (it was kept)
    assert ids[k] == ord(full[k])   # a byte-level vocabulary: a character's id is its byte
    assert pipe.generate("def ", max_new_tokens=80, do_sample=False, stop=[full[k - 1:k + 1], ids[k]]) == full[:k - 1]


class _ClientGone(Exception):
    """A service's own exception, raised in a callback to stop a call."""


def test_generate_reports_each_new_position_and_stops_where_its_callback_raises(gpt):
    pipe = edgegen.load(gpt["pkg"], backend="ort-cpu")
    heard = []
    batch = pipe.generate([list(b"def "), list(b"import os")], max_new_tokens=30, do_sample=False,
                          callback=lambda done, total: heard.append((done, total)))
    assert heard == [(i, 30) for i in range(1, 31)]
    heard.clear()   # with drafts a call takes several tokens: each count is still reported once, in order
    assert pipe.generate([list(b"def "), list(b"import os")], max_new_tokens=30, do_sample=False,
                         prompt_lookup_num_tokens=3, callback=lambda done, total: heard.append(done)) == batch
    assert heard == list(range(1, 31))
    heard.clear()   # where every row stops sooner, the reports stop there
    ids = batch[0]
    stopped = pipe.generate(list(b"def "), max_new_tokens=30, do_sample=False, stop=ids[5],
                            callback=lambda done, total: heard.append(done))
    assert heard == list(range(1, len(stopped) + 1)) and len(stopped) < 30

    def client_gone(done, total):
        if done == 7:
            raise _ClientGone
    with pytest.raises(_ClientGone):
        pipe.generate(["def ", "class "], max_new_tokens=30, seed=1, callback=client_gone)
    # the next call is served as before
    assert pipe.generate([list(b"def "), list(b"import os")], max_new_tokens=30, do_sample=False) == batch
    with pytest.raises(InputError, match=r"callback: expected a function \(tokens done, max_new_tokens\) or None, "
                                         r"found int 3"):
        pipe.generate("def ", callback=3)

def test_user_errors_name_the_problem(gpt):
    pipe = edgegen.load(gpt["pkg"], backend="ort-cpu")
    # stream() refuses when called, not at its first piece: a server has not begun its answer yet
    for arguments, error in (({"max_new_tokens": -1}, InputError), ({"max_new_tokens": 300}, InputError),
                             ({"cache_budget_mb": 0.0001}, CacheBudgetError), ({"temperature": 0.5, "do_sample": False},
                                                                               InputError)):
        with pytest.raises(error):
            pipe.stream("def ", **arguments)
    with pytest.raises(InputError, match="context of 256"):
        pipe.generate("x" * 200, max_new_tokens=100)
    with pytest.raises(CacheBudgetError, match=r"budget .* \(lower max_new_tokens, the prompt or the batch, or raise cache_budget_mb\)$"):
        pipe.generate("x", max_new_tokens=200, cache_budget_mb=0.01)
    with pytest.raises(InputError, match="token ids in"):
        pipe.generate([1, 2, 999])
    with pytest.raises(InputError, match="empty string"):
        pipe.generate("")
    with pytest.raises(InputError, match="top_p"):
        pipe.generate("x", top_p=1.5)
    with pytest.raises(InputError, match="temperature"):
        pipe.generate("x", temperature=0)
    # values that overflow the logits to inf, which turned greedy text into NUL bytes
    with pytest.raises(InputError, match=r"temperature: expected a number from 0.0001 to 10000 when sampling \(for greedy "
                                         r"decoding: do_sample=False, --greedy on the command line, or greedy true in a served request\), found 1e-40"):
        pipe.generate("x", temperature=1e-40)
    with pytest.raises(InputError, match=r"temperature: expected a number from 0.0001 to 10000 when sampling .*found -1"):
        pipe.generate("x", temperature=-1)   # said as the range sampling takes, not as 0 to 10000
    # a sampling setting greedy decoding would ignore is refused, as the command line refuses it (it was ignored)
    with pytest.raises(InputError, match=r"^temperature: expected with sampling \(do_sample=True\), found do_sample=False: "
                                         r"greedy takes the most likely token, whatever the sampling settings$"):
        pipe.generate("x", do_sample=False, temperature=-1)
    with pytest.raises(InputError, match=r"temperature: expected a number from 0.0001 to 10000, found 100000.0$"):
        pipe.generate("x", temperature=1e5)   # no greedy hint: greedy decoding refuses it too
    with pytest.raises(InputError, match=r"repetition_penalty: expected a number from 0.0001 to 10000, found 1e-40"):
        pipe.generate("x", do_sample=False, repetition_penalty=1e-40)
    with pytest.raises(InputError, match="one prompt"):
        list(pipe.stream(["a", "b"]))
    with pytest.raises(InputError, match="max_new_tokens"):
        pipe.generate("x", max_new_tokens=0)
    with pytest.raises(InputError, match=r"^max_new_tokens: expected at most 100000 new tokens, found 1000000$"):
        pipe.generate("x", max_new_tokens=10**6)   # "(call in batches)" is no way past it
    # a refused value the call did not give is named as the package's default; the others are not listed
    pipe.config.generation_defaults = {"do_sample": False, "temperature": 0.0, "top_k": 20}
    with pytest.raises(InputError, match=r"temperature: expected a number from 0.0001 to 10000 when sampling .*found "
                                         r"0.0 \(the package's default temperature; give temperature to override it\)$"):
        pipe.generate("x", do_sample=True)
    with pytest.raises(InputError, match=r"top_p: expected a number above 0 and at most 1 \(the kept probability mass\), found 1.5$"):
        pipe.generate("x", do_sample=True, temperature=0.7, top_p=1.5)
    with pytest.raises(InputError, match=r"^top_k: expected with sampling \(do_sample=True\), found greedy decoding, this "
                                         r"package's default"):
        pipe.generate("x", top_k=5)   # an imported model's default: it gave the greedy text without a word
    greedy = pipe.generate("x", max_new_tokens=3)   # values that change no draw pass, as transformers takes them
    assert pipe.generate("x", max_new_tokens=3, temperature=1.0, top_k=0, top_p=1.0) == greedy


def test_kv_cache_is_allocated_once_per_run_and_sized_from_the_request(gpt, monkeypatch):
    pipe = edgegen.load(gpt["pkg"], backend="ort-cpu")
    allocations = []
    real_empty = np.empty

    def counting_empty(shape, *args, **kwargs):
        allocations.append(shape)
        return real_empty(shape, *args, **kwargs)

    monkeypatch.setattr("edgegen.families.gpt.pipeline.np.zeros", counting_empty)
    pipe.generate(list(b"abc"), max_new_tokens=50, do_sample=False)
    cache = [s for s in allocations if s == 1 * 4 * (3 + 50) * 16]
    assert len(cache) == 2 * 2 * 2  # two buffers (past, present) for each of 2 layers' keys and values
    assert pipe.cache_bytes(1, 53) == sum(cache) * 4
    for batch, tokens in ((-1, 10), (1, -5), (1.5, 10), (1, "a")):
        with pytest.raises(InputError, match=r"(batch|total_tokens): expected a whole number of at least [01], found"):
            pipe.cache_bytes(batch, tokens)


def _in_place_variant(package, precision="fused", **options) -> dict:
    """`edgegen optimize` for ort-cpu, kept whatever this machine's timing says of it."""
    from edgegen.optimize import optimize_package

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("edgegen.optimize.MIN_SPEEDUP", 0.0)
        return optimize_package(package, precision, progress=lambda line: None, **options)["decoder"]


def test_onnx_runtime_variants_write_the_kv_cache_in_place_and_generate_as_the_exported_graph(gpt, tmp_path,
                                                                                                monkeypatch, capsys):
    """A token package's variants for ort-cpu take the in-place form (cache_in_place.py): each call
    writes only its new keys and values, into one buffer per cache tensor bound as both the past and
    the present; tokens stay the exported graph's, batched, chunked and uncached."""
    from edgegen.families.gpt.cache_in_place import FORM
    from edgegen.families.gpt.pipeline import KV_CACHE_IN_PLACE, KV_CACHE_METADATA

    pkg = tmp_path / "pkg"
    shutil.copytree(gpt["pkg"], pkg)
    record = _in_place_variant(pkg)
    assert record["ort_form"] == FORM.name and "file" in record, record
    assert main(["info", str(pkg)]) == 0 and FORM.name in (out := capsys.readouterr().out)
    # a token model loops over its decoder too: info said nothing of it (review 184)
    assert ("\n            each gate compares the next token at every position of held-out text, each after fp32's own "
            "(teacher-forced); a generation goes on from its own tokens") in out
    import onnxruntime

    from edgegen.errors import PackageError

    assert record["onnxruntime"] == onnxruntime.__version__
    # on an ONNX Runtime without TensorScatter the variant's load failure says why and what to do
    real_session = edgegen.runtimes.OrtSession

    def older_runtime(part, path, *args, **kwargs):
        if ".fused." in Path(path).name:
            raise PackageError(f"graph {part!r} at {str(path)!r}: expected a loadable ONNX model, found: no TensorScatter")
        return real_session(part, path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("edgegen.runtimes.OrtSession", older_runtime)
        patch.setattr(onnxruntime, "__version__", "1.23.2")
        with pytest.raises(PackageError, match=r"no TensorScatter \(the fused variant is in ONNX Runtime's form, KV cache "
                                               r"written in place .*, and was made with onnxruntime .*; this one is 1\.23\.2.*run edgegen optimize"):
            edgegen.load(pkg, precision="fused")
    graph = onnx.load(str(pkg / record["file"]))
    assert [n.op_type for n in graph.graph.node].count("TensorScatter") == 2 * TINY["n_layer"]
    assert not [n for n in graph.graph.node if n.op_type == "Concat" and n.input[0].startswith("past_key_values.")]
    assert {p.key: p.value for p in graph.metadata_props}[KV_CACHE_METADATA] == KV_CACHE_IN_PLACE
    exported, in_place = edgegen.load(pkg), edgegen.load(pkg, precision="fused")
    assert in_place._in_place and not exported._in_place
    prompts = [list(b"def __init__(self, "), list(b"import o"), list(b"x")]
    expected = exported.generate(prompts, max_new_tokens=40, do_sample=False)
    assert expected == [gpt["model"].greedy(p, 40) for p in prompts]
    assert in_place.generate(prompts, max_new_tokens=40, do_sample=False) == expected
    assert in_place.generate(prompts, max_new_tokens=10, do_sample=False, use_cache=False) == [e[:10] for e in expected]
    monkeypatch.setattr("edgegen.families.gpt.pipeline.PREFILL_CHUNK", 5)   # 5 + 5 + 5 + 4 prompt tokens
    assert in_place.generate(prompts, max_new_tokens=40, do_sample=False) == expected
    # the capacity grown (the buffer re-laid at a wider stride) every 3 tokens, and every 7
    for growth in (3, 7):
        monkeypatch.setattr("edgegen.families.gpt.pipeline.CACHE_GROWTH", growth)
        assert in_place.generate(prompts, max_new_tokens=40, do_sample=False) == expected
    # one buffer per cache tensor: half the exported form's memory
    allocations, real_zeros = [], np.zeros
    monkeypatch.setattr("edgegen.families.gpt.pipeline.np.zeros", lambda shape, *a, **k: allocations.append(shape) or
                        real_zeros(shape, *a, **k))
    in_place.generate(list(b"abc"), max_new_tokens=50, do_sample=False)
    assert [s for s in allocations if s == 1 * 4 * (3 + 50) * 16] == [1 * 4 * 53 * 16] * (2 * 2)
    assert in_place.cache_bytes(1, 53) * 2 == exported.cache_bytes(1, 53)
    # onnxruntime-genai's loop runs the form with a buffer shared between past and present: the
    # overlay edgegen gives says both, and leaves the package's genai_config.json as exported
    from edgegen.serving.genai import genai_overlay

    assert json.loads(genai_overlay(pkg, "fused")) == {"model": {"decoder": {"filename": record["file"]}},
                                                      "search": {"past_present_share_buffer": True}}
    # a variant edgegen opens with an optimizer off: GenAI runs it below that optimizer's level (int8's
    # Q/DQ propagation: basic; an fp16 graph's NCHWc layout: extended, which keeps the other fusions)
    manifest = json.loads((pkg / "edgegen.json").read_text())
    for disabled, level in ((["NchwcTransformer"], "ORT_ENABLE_EXTENDED"), (["QDQPropagationTransformer"], "ORT_ENABLE_BASIC")):
        edited = copy.deepcopy(manifest)
        edited["variants"]["fused"]["decoder"]["disabled_optimizers"] = disabled
        (pkg / "edgegen.json").write_text(json.dumps(edited))
        assert json.loads(genai_overlay(pkg, "fused"))["model"]["decoder"]["session_options"] == {
            "graph_optimization_level": level}
    (pkg / "edgegen.json").write_text(json.dumps(manifest))
    if importlib.util.find_spec("onnxruntime_genai"):
        written = (pkg / "genai_config.json").read_bytes()
        assert _genai_greedy(pkg, prompts[0], 40, precision="fused") == expected[0]
        assert (pkg / "genai_config.json").read_bytes() == written


def test_the_in_place_form_is_checked_and_where_it_does_not_hold_the_variant_keeps_the_exported_form(gpt, tmp_path,
                                                                                                       monkeypatch, capsys):
    """A rewrite whose outputs differ from the variant it came from is not kept (here one that masks
    nothing beyond the tokens written); neither is one a graph does not fit (opset 18 spells
    attention out); a TensorRT target never gets the form."""
    import dataclasses

    from edgegen.families.gpt import cache_in_place
    from edgegen.optimize import optimize_package

    def unmasked(model):
        model = cache_in_place.write_cache_in_place(model)
        lowest = next(i for i in model.graph.initializer if i.name == "kv_cache_in_place.lowest")
        lowest.CopyFrom(onnx.numpy_helper.from_array(np.array(0, np.float32), lowest.name))
        return model

    def failing(before, after, feeds):
        raise RuntimeError("ONNX Runtime said no")

    pkg = tmp_path / "pkg"
    shutil.copytree(gpt["pkg"], pkg)
    monkeypatch.setattr(cache_in_place, "FORM", dataclasses.replace(cache_in_place.FORM, rewrite=unmasked))
    record = _in_place_variant(pkg)
    assert "ort_form" not in record and "file" in record
    assert re.search(r"not applied, its outputs differ from the variant's: logits @ 8, \d+ past, room \+3",
                     record["ort_form_declined"]), record["ort_form_declined"]
    # a trained package's gate feeds are decode steps: the check makes a prompt call of their ids,
    # and runs its second half after its first
    from edgegen.runtimes.ort import OrtSession

    entry = Package(pkg).graphs["decoder"]
    before = OrtSession("decoder", pkg / "decoder.onnx", entry.inputs, entry.outputs)
    rewritten = tmp_path / "in_place.onnx"
    onnx.save(cache_in_place.write_cache_in_place(onnx.load(str(pkg / "decoder.onnx"))), str(rewritten))
    after = OrtSession("decoder", rewritten, before.inputs, before.outputs)
    step = {**{s.name: np.zeros((2, 4, 5, 16), np.float32) for s in before.inputs if s.name.startswith("past_")},
            "input_ids": np.array([[100], [101]]), "position_ids": np.array([[5], [5]]),
            "attention_mask": np.ones((2, 6), np.int64)}
    labels = {c.batch for c in cache_in_place.check_in_place(before, after, [step])}
    assert labels == {f"2, {past} past, room +{spare}" for past in (5, 0, 4) for spare in (0, 3)}, labels
    exported_form = edgegen.load(pkg, precision="fused")
    assert not exported_form._in_place
    assert len(exported_form.generate(list(b"def "), max_new_tokens=10, do_sample=False)) == 10
    monkeypatch.setattr(cache_in_place, "FORM", dataclasses.replace(cache_in_place.FORM, check=failing))
    assert "not applied (checking it failed: ONNX Runtime said no)" in _in_place_variant(pkg)["ort_form_declined"]
    monkeypatch.undo()
    pkg18 = tmp_path / "pkg18"
    shutil.copytree(gpt["pkg18"], pkg18)
    assert "not applied (decoder graph: expected ONNX Attention nodes" in _in_place_variant(pkg18)["ort_form_declined"]
    # fp16's casts stand between the cache inputs and their Concat: the exported form stays
    record = _in_place_variant(pkg, "fp16")
    assert "found no Concat that reads it first" in record["ort_form_declined"] and "file" in record
    assert not edgegen.load(pkg, precision="fp16")._in_place
    record = optimize_package(pkg, "int4", target="tensorrt", gate_threshold=0.0, progress=lambda line: None)["decoder"]
    assert not {"ort_form", "ort_form_declined"} & set(record) and not edgegen.load(pkg, precision="int4")._in_place
    # an ort-cpu int8 variant is in the in-place form, which TensorRT's engines builder refuses by name
    record = _in_place_variant(pkg, "int8", calibration=16)
    assert record["ort_form"] == cache_in_place.FORM.name and record["calibration"]["source"] == "stdlib"
    pipe = edgegen.load(pkg, precision="int8")
    assert pipe._in_place and pipe.generate([list(b"def "), list(b"x = ")], max_new_tokens=12, do_sample=False) == \
        pipe.generate([list(b"def "), list(b"x = ")], max_new_tokens=12, do_sample=False, use_cache=False)
    # GenAI runs it with the optimizer edgegen turns off left out (its QDQ propagation refused it at load)
    if importlib.util.find_spec("onnxruntime_genai"):
        assert _genai_greedy(pkg, list(b"def "), 12, precision="int8") == \
            pipe.generate(list(b"def "), max_new_tokens=12, do_sample=False)
    from edgegen.errors import BackendError
    from edgegen.runtimes.engines import cached_engines

    with pytest.raises(BackendError, match=r"int8 variant of graph 'decoder' is in ONNX Runtime's form \(KV cache "
                                           r"written in place.*\), made for ort-cpu \(edgegen optimize --precision "
                                           r"int8 --target tensorrt"):
        cached_engines(pkg, "int8")
    # edgegen.load on a Jetson, with no --target to go by, advises its own JetPack's form: after an export
    # for it, since this package's opset-23 graphs are beyond JetPack 6's parser and optimize refuses them
    monkeypatch.setattr("edgegen.runtimes.engines.this_device_target", lambda: "jetpack6")
    with pytest.raises(BackendError, match=r"\(its graphs are beyond what TensorRT 10.3 reads: export again with --target "
                                           r"jetpack6, then edgegen optimize --precision int8 --target jetpack6 writes"):
        cached_engines(pkg, "int8")
    # and so does edgegen build without --target there (its default was tensorrt: the desktop's advice)
    monkeypatch.setattr("edgegen.targets.this_device_target", lambda: "jetpack6")
    assert main(["build", str(pkg), "--precision", "int8"]) != 0
    assert "export again with --target jetpack6, then edgegen optimize" in capsys.readouterr().err
    # and check, which may find it parses, says so too (it said "parses" of a variant build refuses)
    from edgegen.check import check_package

    from edgegen.check import format_checks

    (int8,) = [c for c in check_package(pkg, target="tensorrt", device_parser=False) if c.part == "decoder (int8)"]
    assert not int8.ok and int8.build_refuses.startswith("in ONNX Runtime's form (KV cache written in place")
    assert int8.build_refuses.endswith("made for ort-cpu: edgegen build refuses it (edgegen optimize --precision int8 "
                                       "--target tensorrt writes TensorRT's form)")
    said = format_checks([int8])   # the parser's verdict and build's refusal, each as it is
    assert "nodes: parses (judged by TensorRT 10.15's parser table), but no engine is built from it\n" in said
    assert "\n  not built    in ONNX Runtime's form" in said


def test_prompt_lookup_drafts_copy_the_sequence_where_its_last_tokens_occurred_before():
    from edgegen.families.gpt.prompt_lookup import batch_drafts, draft_tokens

    seq = lambda *ids: np.array(ids, np.int64)   # noqa: E731
    assert draft_tokens(seq(1, 2, 3, 9, 4, 1, 2, 3), 2).tolist() == [9, 4]        # the last 3 tokens matched
    assert draft_tokens(seq(1, 2, 3, 9, 5, 2, 3, 7, 2, 3), 1).tolist() == [7]     # 2: the most recent match
    assert draft_tokens(seq(3, 8, 5, 3), 2).tolist() == []                         # 1 token alone: chance
    assert draft_tokens(seq(7, 8, 7, 8), 5).tolist() == [7, 8, 7, 8, 7]            # a loop continues
    assert draft_tokens(seq(4, 4, 4), 3).tolist() == [4, 4, 4]
    assert draft_tokens(seq(1, 2, 3), 4).tolist() == [] and draft_tokens(seq(5), 4).tolist() == []
    assert draft_tokens(seq(5, 5), 0).tolist() == []
    # rows of a batch, each its own length; none where a live row has none (a filler would fail);
    # rows that have ended only filled
    sequences = np.array([[6, 1, 6, 1, 9, 9, 0], [2, 5, 7, 5, 7, 5, 0], [5, 7, 5, 8, 9, 3, 0]])
    lengths, both, all_three = np.array([4, 6, 6]), np.array([True, True, False]), np.ones(3, bool)
    assert batch_drafts(sequences, lengths, 3, both, filler=0).tolist() == [[6, 1, 6], [7, 5, 7], [0, 0, 0]]
    assert batch_drafts(sequences, lengths, 3, all_three, filler=0).shape == (3, 0)
    assert batch_drafts(sequences, lengths, 3, np.array([False, False, True]), filler=0).shape == (3, 0)
    assert batch_drafts(sequences, lengths - 1, 3, both, filler=0).shape == (3, 0)


def test_prompt_lookup_generates_the_same_tokens_in_fewer_decoder_calls(gpt, tmp_path, monkeypatch):
    """Each decoding call also checks drafts copied from the sequence (prompt_lookup.py); the
    tokens kept are those the model chooses, so greedy output is PyTorch's and seeded sampling
    (top-k, top-p, repetition penalty) draws what decoding without drafts draws, where drafts are
    kept and where they are not: alone and left-padded in a batch, through the exported graph (a copied cache, re-laid where drafts were
    rejected), the opset-18 graph and the in-place form (capacity grown amid drafts)."""
    pkg = tmp_path / "pkg"
    shutil.copytree(gpt["pkg"], pkg)
    _in_place_variant(pkg)
    pipes = {"exported": edgegen.load(pkg), "opset 18": edgegen.load(gpt["pkg18"]),
             "in place": edgegen.load(pkg, precision="fused")}
    assert pipes["in place"]._in_place and not pipes["exported"]._in_place
    calls = []
    repetitive = list(b"x = self.x\ny = self.y\nz = self.z\nx = self.x\ny = self.")
    prompts = [list(b"def __init__(self"), list(b"im"), repetitive]
    expected = [gpt["model"].greedy(p, 60) for p in prompts]
    sampled = {"seed": 4, "top_k": 20, "top_p": 0.9, "repetition_penalty": 1.3}
    for name, pipe in pipes.items():
        monkeypatch.setattr(pipe, "_binding", _recording_widths(pipe._binding, calls))
        for lookup in (1, 3, 8):
            for prompt, greedy in zip(prompts, expected):
                calls.clear()
                assert pipe.generate(prompt, max_new_tokens=60, do_sample=False,
                                     prompt_lookup_num_tokens=lookup) == greedy, (name, lookup, bytes(prompt))
                assert len(calls) <= 60 + 1
            assert pipe.generate(prompts, max_new_tokens=60, do_sample=False, prompt_lookup_num_tokens=lookup) == \
                expected, (name, lookup)
            assert pipe.generate(prompts, max_new_tokens=60, prompt_lookup_num_tokens=lookup, **sampled) == \
                pipe.generate(prompts, max_new_tokens=60, **sampled), (name, lookup)
        calls.clear()
        pipe.generate(prompts[0], max_new_tokens=60, do_sample=False, prompt_lookup_num_tokens=4)   # runs of spaces
        assert 1 + 2 <= len(calls) <= 60 * 3 // 4, (name, len(calls))   # the prompt, then fewer calls than tokens
        # drafts kept at sampled positions and under a repetition penalty: the same draws, `seen` in order
        for options in ({"temperature": 0.15, "seed": 2}, {"temperature": 0.15, "seed": 3, "repetition_penalty": 0.8,
                                                            "top_k": 5},
                        {"temperature": 0.2, "seed": 7, "top_p": 0.9, "repetition_penalty": 0.7},
                        {"do_sample": False, "repetition_penalty": 1.2}, {"do_sample": False, "repetition_penalty": 0.8}):
            plain = pipe.generate(prompts[0], max_new_tokens=60, **options)
            calls.clear()
            assert pipe.generate(prompts[0], max_new_tokens=60, prompt_lookup_num_tokens=4, **options) == plain, \
                (name, options)
            assert len(calls) <= 52, (name, options, len(calls))   # 8 drafts or more kept of 60 tokens
    in_place = pipes["in place"]
    for growth, chunk in ((3, 5), (7, 4)):
        monkeypatch.setattr("edgegen.families.gpt.pipeline.CACHE_GROWTH", growth)
        monkeypatch.setattr("edgegen.families.gpt.pipeline.PREFILL_CHUNK", chunk)
        assert in_place.generate(prompts, max_new_tokens=60, do_sample=False, prompt_lookup_num_tokens=5) == expected
    # a stream yields the same tokens one by one; drafts stop at max_new_tokens and at the context's end
    assert list(in_place.stream(repetitive, max_new_tokens=60, do_sample=False, prompt_lookup_num_tokens=4)) == \
        expected[2]
    assert in_place.generate(repetitive, max_new_tokens=3, do_sample=False, prompt_lookup_num_tokens=8) == \
        expected[2][:3]
    end = 256 - len(repetitive)
    assert pipes["exported"].generate(repetitive, max_new_tokens=end, do_sample=False, prompt_lookup_num_tokens=8) == \
        pipes["exported"].generate(repetitive, max_new_tokens=end, do_sample=False)
    # drafts that keep failing cost little: after a call whose drafts were all rejected, the next
    # carries one draft, and only after a pause of 1, 2, 4 ... LOOKUP_MAX_PAUSE calls without any
    widths = []
    monkeypatch.setattr("edgegen.families.gpt.pipeline.PREFILL_CHUNK", 256)
    monkeypatch.setattr(in_place, "_binding", _recording_widths(in_place._binding, widths))
    monkeypatch.setattr("edgegen.families.gpt.pipeline.batch_drafts",
                        lambda sequences, lengths, count, live, filler: np.zeros((len(lengths), count), np.int64))
    made = in_place.generate(prompts[0], max_new_tokens=80, do_sample=False, prompt_lookup_num_tokens=4)
    assert made == gpt["model"].greedy(prompts[0], 80) and 0 not in made   # NUL bytes, never chosen
    pauses = [1, 2, 4, 8] + [16] * 8
    assert widths[:2] == [len(prompts[0]), 5] and widths[2:] == \
        sum(([1] * pause + [2] for pause in pauses), [])[:len(widths) - 2]
    for wrong in (-1, True, 2.5, "4", in_place.context, 1000000):   # the last two: more than a call can hold
        with pytest.raises(InputError, match=r"prompt_lookup_num_tokens: expected a whole number of draft tokens from "
                                             rf"0 \(none\) to {in_place.context - 1}"):
            in_place.generate("x", prompt_lookup_num_tokens=wrong)
    with pytest.raises(InputError, match=r"prompt_lookup_num_tokens 4: expected use_cache=True"):
        in_place.generate("x", prompt_lookup_num_tokens=4, use_cache=False)


def test_prompt_lookup_rows_of_a_batch_keep_their_own_drafts(gpt, tmp_path, monkeypatch):
    """In a batch, each row keeps the drafts it chose: rows that kept fewer move right behind more
    padding, and all rows move left by the padding every live row has (the longest prompt's row
    fell behind, or ended). Rows
    take their tokens at their own pace, greedy (PyTorch's tokens) and sampled (each row's n-th
    token the n-th number drawn for it, as without drafts), through both cache forms, with a
    row ending early at a stop token."""
    from edgegen.families.gpt import pipeline

    pkg = tmp_path / "pkg"
    shutil.copytree(gpt["pkg"], pkg)
    _in_place_variant(pkg)
    moves, calls = [], []
    for form in (pipeline._CopiedCache, pipeline._InPlaceCache):
        def keep(self, written, kept, starts=None, offsets=None, live=None, original=form.keep):
            if starts is not None:
                moves.append(offsets[live].tolist())
            original(self, written, kept, starts, offsets, live)
        monkeypatch.setattr(form, "keep", keep)
    prompts = [list(b"x = self.x\ny = self.y\nz = self.z\nx = self.x\ny = self."),
               list(b"if a:\n    b = 1\nif a:\n    b = 1\nif a:\n"), list(b"import os\nimport os\nimport"),
               list(b"def __init__(self")]
    expected = [gpt["model"].greedy(p, 70) for p in prompts]
    for name, pipe in (("exported", edgegen.load(pkg)), ("in place", edgegen.load(pkg, precision="fused"))):
        monkeypatch.setattr(pipe, "_binding", _recording_widths(pipe._binding, calls))
        moves.clear()
        calls.clear()
        assert pipe.generate(prompts, max_new_tokens=70, do_sample=False, prompt_lookup_num_tokens=4) == expected, name
        assert any(min(m) < 0 for m in moves) and any(max(m) > 0 for m in moves), (name, moves)   # right, and left
        assert len(calls) < 1 + 70, name
        for options in ({"temperature": 0.15, "seed": 2}, {"temperature": 0.2, "seed": 5, "top_k": 5,
                                                            "repetition_penalty": 0.8}):
            moves.clear()
            assert pipe.generate(prompts, max_new_tokens=70, prompt_lookup_num_tokens=4, **options) == \
                pipe.generate(prompts, max_new_tokens=70, **options), (name, options)
            assert moves, (name, options)
        # to the context's end: rows that end first stay within the model's positions
        end = pipe.context - max(map(len, prompts))
        assert pipe.generate(prompts, max_new_tokens=end, do_sample=False, prompt_lookup_num_tokens=4) == \
            pipe.generate(prompts, max_new_tokens=end, do_sample=False), name
        # a stop token that only the first row makes: it ends there while the others go on
        stop = next(t for t in expected[0] if all(t not in row for row in expected[1:]))
        cut = [row[:row.index(stop) + 1] if stop in row else row for row in expected]
        assert pipe.generate(prompts, max_new_tokens=70, do_sample=False, prompt_lookup_num_tokens=4, stop=stop) == \
            cut, name


def test_prompt_lookup_in_a_batch_of_held_out_text_to_the_context_end(shipped_package):
    """The shipped gpt-stdlib continuing 8 held-out windows of Python source as one batch, to its
    context's end: rows keep different numbers of drafts and end at different calls, and the
    tokens are those without drafts (a row that had ended once took positions past the model's)."""
    pipe = edgegen.load(shipped_package("gpt-stdlib"))
    ids = pipe.tokenizer.encode(read_corpus("stdlib")[1][:1 << 18].decode("utf-8", errors="replace"))
    prompts = [ids[s:s + 128] for s in np.random.default_rng(3).integers(0, len(ids) - 128, 8)]
    new = pipe.context - 128
    assert pipe.generate(prompts, max_new_tokens=new, do_sample=False, prompt_lookup_num_tokens=4) == \
        pipe.generate(prompts, max_new_tokens=new, do_sample=False)
    # batches of windows of other lengths, stopping at a newline or at ")" and ":", greedy and
    # sampled, a few new tokens or to the context's end (a row that rejected a draft and then made a
    # stop token once went on)
    rng = np.random.default_rng(5)
    for trial in range(12):
        b = int(rng.integers(2, 6))
        windows = [ids[s:s + int(n)] for s, n in zip(rng.integers(0, len(ids) - 160, b), rng.integers(1, 160, b))]
        new = int(rng.choice([3, 6, 40, pipe.context - max(map(len, windows))]))
        stop = [10] if trial % 2 else [ord(")"), ord(":")]
        for options in ({"do_sample": False}, {"seed": trial, "top_k": 20, "repetition_penalty": 1.2}):
            plain = pipe.generate(windows, max_new_tokens=new, stop=stop, **options)
            for lookup in (2, 8):
                assert pipe.generate(windows, max_new_tokens=new, stop=stop, prompt_lookup_num_tokens=lookup,
                                     **options) == plain, (trial, new, lookup, options)
    # the longest prompt's row ends at its second token; the short row, moved left to slot 0, may not
    # take more drafts than it still needs (they once outgrew the call's buffers)
    long, short = list(b"RV&Bb_TG^Nk<a2E2-pAe{n3H-~*xK]h-NXIor;g^"), list(b"import os\nimport os\nimport os\n")
    stop = pipe.generate(long, max_new_tokens=2, do_sample=False)[1]
    assert stop not in pipe.generate(short, max_new_tokens=4, do_sample=False)
    for lookup in (4, 8):
        assert pipe.generate([long, short], max_new_tokens=4, do_sample=False, stop=stop,
                             prompt_lookup_num_tokens=lookup) == \
            pipe.generate([long, short], max_new_tokens=4, do_sample=False, stop=stop)


def test_each_row_takes_the_random_numbers_decoding_without_drafts_draws_for_it():
    """Decoding without drafts draws one number per row per token, a token at a time; rows that
    drafts took ahead take theirs from the same sequence (so seeded output is the same)."""
    from edgegen.families.gpt.pipeline import _Draws

    plain = np.random.default_rng(7)
    steps = np.stack([plain.random(3) for _ in range(150)])   # without drafts: rng.random(batch) per token
    draws = _Draws(np.random.default_rng(7), 3)
    for made in ([0, 0, 0], [5, 0, 2], [64, 3, 63], [149, 70, 128], [1, 1, 1]):
        assert draws.at(np.array(made)).tolist() == steps[made, [0, 1, 2]].tolist()


@pytest.mark.parametrize("vocab", [300, 5000, 50257])   # the short paths, then the long ones (past 512 and 4096)
def test_sampling_matches_transformers_logits_processors(vocab):
    pytest.importorskip("transformers")
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((4, vocab)) * 3).astype(np.float32)
    seen = rng.random((4, vocab)) < 0.1
    from transformers.generation.logits_process import (RepetitionPenaltyLogitsProcessor, TopKLogitsWarper,
                                                         TopPLogitsWarper)
    from edgegen.runtimes.token_sampling import _nucleus, _top_k_ids, penalize_repeats

    def dropped_by_top_k(k):
        return np.stack([np.isin(np.arange(vocab), _top_k_ids(row, k), invert=True) for row in logits])

    def dropped_by_top_p(p):
        shifted = logits - logits.max(axis=-1, keepdims=True)
        return np.stack([np.isin(np.arange(vocab), _nucleus(row, np.exp(row, dtype=np.float64), p), invert=True)
                         for row in shifted])

    ids = torch.from_numpy(np.stack([np.flatnonzero(r)[:20] for r in seen]))
    mask = np.zeros_like(seen)
    np.put_along_axis(mask, ids.numpy(), True, 1)
    theirs = RepetitionPenaltyLogitsProcessor(1.3)(ids, torch.from_numpy(logits.copy())).numpy()
    np.testing.assert_allclose(penalize_repeats(logits, mask, 1.3), theirs, rtol=1e-6)
    for k in (1, 7, 300):
        theirs = TopKLogitsWarper(k)(ids, torch.from_numpy(logits.copy())).numpy()
        assert np.array_equal(dropped_by_top_k(k), np.isinf(theirs))
    for p in (0.05, 0.5, 0.9, 0.999):
        theirs = TopPLogitsWarper(p)(ids, torch.from_numpy(logits.copy())).numpy()
        assert np.array_equal(dropped_by_top_p(p), np.isinf(theirs)), p
    # sampling draws from the kept tokens only, in proportion to their probability
    draws = np.concatenate([next_tokens(np.repeat(logits[:1], 500, 0), None, Sampling(top_k=3), np.random.default_rng(s))
                            for s in range(4)])
    top3 = set(np.argsort(-logits[0])[:3])
    assert set(draws) <= top3 and len(set(draws)) == 3


def _tokens_by_full_passes(logits: np.ndarray, sampling: Sampling, uniforms: np.ndarray) -> np.ndarray:
    """next_tokens' rule the plain way: mask below the k-th logit (ties stay), sort every probability
    (ties in vocabulary order) for top-p, then sum the kept ones in vocabulary order."""
    shifted = logits / np.float32(sampling.temperature)
    shifted -= shifted.max(axis=-1, keepdims=True)
    tokens = []
    for row, u in zip(shifted, uniforms):
        probs = np.exp(row, dtype=np.float64)
        if sampling.top_k and sampling.top_k < len(row):
            probs[row < np.sort(row)[::-1][sampling.top_k - 1]] = 0.0
        if sampling.top_p is not None and sampling.top_p < 1:
            order = np.argsort(-probs, kind="stable")
            ranked = probs[order]
            kept = np.zeros(len(row), bool)
            kept[order] = np.cumsum(ranked) - ranked < sampling.top_p * probs.sum()
            probs[~kept] = 0.0
        cdf = np.cumsum(probs)
        tokens.append(int((cdf <= u * cdf[-1]).sum()))
    return np.array(tokens)


@pytest.mark.parametrize("vocab", [50, 600, 5000, 50257])
def test_sampling_draws_the_tokens_of_full_passes_without_sorting_the_vocabulary(vocab):
    """Past 512 tokens top-p weighs logit bins and sorts only the edge's, past 4096 top-k and the
    draw go by blocks: the tokens stay those of sorting and summing everything, ties (at top-k's
    k-th logit, at top-p's edge), masked (-inf) tokens, underflowing probabilities, the extreme
    uniform numbers and rows that are views of a larger array included."""
    rng = np.random.default_rng(vocab)
    settings = (Sampling(temperature=0.7), Sampling(top_k=7), Sampling(top_k=60), Sampling(top_p=0.9),
                Sampling(top_p=0.5, temperature=1.3), Sampling(top_k=40, top_p=0.8), Sampling(temperature=1e-3, top_p=0.9))
    for trial in range(8 if vocab > 5000 else 24):
        logits = (rng.standard_normal((3, vocab)) * rng.choice([0.3, 3.0, 8.0])).astype(np.float32)
        if trial % 3 == 1:
            logits = np.round(logits * 2) / 2          # many equal logits
        elif trial % 3 == 2:
            logits[rng.random(logits.shape) < 0.3] = -np.inf
        for sampling in settings:
            uniforms = np.array([rng.random(), 0.0, 1 - 2 ** -53])[rng.permutation(3)] if trial % 4 == 3 else rng.random(3)
            assert next_tokens(logits, None, sampling, None, uniforms).tolist() == \
                _tokens_by_full_passes(logits, sampling, uniforms).tolist(), (trial, sampling)
            # each row alone, from a strided view (the decode loop's logits[:, j]): the same tokens
            assert [int(next_tokens(np.stack([logits, logits], axis=1)[r:r + 1, 0], None, sampling, None, uniforms[r:r + 1])[0])
                    for r in range(len(logits))] == _tokens_by_full_passes(logits, sampling, uniforms).tolist()
    # a flat row's draw, at uniform numbers spread to land in every block of 64 tokens
    from edgegen.runtimes.token_sampling import _drawn_by_blocks

    probs = np.exp(rng.standard_normal(vocab) * 0.3)
    cdf = np.cumsum(probs)
    spread = (np.arange(4 * vocab // 64 + 4) + rng.random(4 * vocab // 64 + 4)) / (4 * vocab // 64 + 4)
    assert [_drawn_by_blocks(probs, u) for u in spread] == [int((cdf <= u * cdf[-1]).sum()) for u in spread]


def test_rows_that_stopped_are_neither_looked_at_nor_drawn_for():
    """A batch's rows that stopped keep being computed; their logits may overflow (NaN) without
    stopping the others, and the live rows' tokens are those they get alone."""
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((3, 1000)) * 3).astype(np.float32)
    logits[1] = np.nan
    uniforms = rng.random(3)
    for sampling in (Sampling(do_sample=False), Sampling(top_k=50, top_p=0.9, repetition_penalty=1.2)):
        seen = np.zeros((3, 1000), bool)
        tokens = next_tokens(logits, seen, sampling, None, uniforms, live=np.array([True, False, True]))
        assert tokens.tolist() == [int(next_tokens(logits[r:r + 1], seen[r:r + 1], sampling, None, uniforms[r:r + 1])[0])
                                   if r != 1 else 0 for r in range(3)]


def test_top_p_over_a_long_flat_row_sorts_only_the_tokens_near_its_edge(monkeypatch):
    """Random weights (or a high temperature) give flat logits, whose nucleus holds most of the
    vocabulary: sorting it took 6.2 ms a token at 32,000 tokens, more than an int4 decode step."""
    logits = (np.random.default_rng(0).standard_normal((1, 151936)) * 0.3).astype(np.float32)
    sorted_sizes = []

    def recording(sort):
        def sorting(a, *args, **kwargs):
            sorted_sizes.append(np.size(a))
            return sort(a, *args, **kwargs)
        return sorting

    expected = _tokens_by_full_passes(logits, Sampling(top_p=0.9), np.array([0.37]))
    monkeypatch.setattr(np, "argsort", recording(np.argsort))
    monkeypatch.setattr(np, "sort", recording(np.sort))
    assert next_tokens(logits, None, Sampling(top_p=0.9), None, np.array([0.37])).tolist() == expected.tolist()
    assert sorted_sizes and max(sorted_sizes) < 151936 // 20, sorted_sizes


@pytest.mark.parametrize("vocab", [256, 32000])
def test_logits_with_nan_or_inf_are_refused_by_name(vocab):
    """An overflowing model (an fp16 variant's, most often) gives NaN or Inf logits: sampling took
    token 0 or crashed inside numpy (IndexError, bincount's ValueError), greedy took the NaN."""
    from edgegen.errors import NonFiniteError

    rng = np.random.default_rng(0)
    for spoil, found in ((lambda row: row.__setitem__(7, np.nan), "NaN or Inf"),
                         (lambda row: row.__setitem__(7, np.inf), "NaN or Inf"),
                         (lambda row: row.fill(-np.inf), "no finite one")):
        logits = (rng.standard_normal((2, vocab)) * 3).astype(np.float32)
        spoil(logits[1])
        for sampling in (Sampling(do_sample=False), Sampling(), Sampling(top_k=50), Sampling(top_p=0.9),
                         Sampling(top_k=50, top_p=0.9, repetition_penalty=1.2)):
            with pytest.raises(NonFiniteError, match=rf"^logits of row 1: expected finite numbers, found {found} "):
                next_tokens(logits, np.zeros((2, vocab), bool), sampling, None, np.array([0.3, 0.3]))


@pytest.mark.filterwarnings("ignore:.*the rest was cut")   # long prompts on purpose
def test_padded_encoding_from_several_threads_gives_each_its_own_ids(tmp_path):
    """Truncation and padding are the shared tokenizer's state, set and reset around each call: a
    text-to-image server's threads got each other's lengths (wrong ids without an error, or numpy's
    ValueError on ragged rows)."""
    import threading

    from tokenizers import Tokenizer, models, pre_tokenizers

    from edgegen.runtimes.tokenizer import BPETokenizer

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate("[PAD] a b c seven two".split())}, "[PAD]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    bpe = BPETokenizer(tmp_path / "tokenizer.json")
    calls = [(["a"], 8), (["seven " * 20, "b"], 4), (["two three", "a b c a b c"], 12)]
    expected = [bpe.encode_padded(texts, length, 0) for texts, length in calls]
    wrong = []

    def encode(offset):
        for i in range(1500):
            texts, length = calls[(i + offset) % 3]
            try:
                ids = bpe.encode_padded(texts, length, 0)
            except ValueError as exc:
                wrong.append(exc)
                continue
            if not np.array_equal(ids, expected[(i + offset) % 3]):
                wrong.append(ids)

    threads = [threading.Thread(target=encode, args=(k,)) for k in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not wrong


def test_text_utf8_cannot_carry_is_an_input_error_for_both_tokenizers(gpt, tmp_path, capsys):
    """A lone surrogate (a string cut inside a pair, or argv bytes the locale could not decode)
    reached the tokenizers' own exceptions; now it is refused, naming the character and where."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from edgegen.runtimes.tokenizer import BPETokenizer

    pipe = edgegen.load(gpt["pkg"])
    message = r"prompt: expected text UTF-8 can encode, found '\\ud800' at character 2 \(a lone surrogate"
    with pytest.raises(InputError, match=message):
        pipe.generate("ab\ud800", max_new_tokens=2)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    bpe = BPETokenizer(tmp_path / "tokenizer.json")
    with pytest.raises(InputError, match=message):
        bpe.encode("ab\ud800")
    with pytest.raises(InputError, match=message.replace("prompt", r"prompts\[1\]", 1)):
        bpe.encode_padded(["fine", "ab\ud800"], 8, 0)
    assert main(["generate", str(gpt["pkg"]), "--prompt", "ab\udcff", "--max-new-tokens", "2"]) == 2
    assert "edgegen: error: --prompt: expected text UTF-8 can encode, found '\\udcff' at character 2" in capsys.readouterr().err


def _tiny_gpt2(folder, n_positions=256):
    """A random GPT-2 and a byte-level BPE tokenizer trained here on stdlib text."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    corpus = [p.read_text(encoding="utf-8", errors="ignore") for p in stdlib_files()[:40]]
    tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>"],
                                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                                                pad_token="<|endoftext|>")
    config = transformers.GPT2Config(vocab_size=512, n_positions=n_positions, n_embd=64, n_layer=2, n_head=4,
                                     bos_token_id=0, eos_token_id=0, initializer_range=0.2)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return model, fast


def test_a_gpt2_config_naming_more_layers_than_its_weights_names_the_missing_tensors(tmp_path):
    """Only the third layer's tensors are missing, and those are named; the rest are there."""
    pytest.importorskip("transformers")
    _tiny_gpt2(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "n_layer": 3}))
    with pytest.raises(CheckpointError, match=r"expected the tensors config.json describes, found tensors 12 missing "
                                              r"\(blocks\.2\.ln_1\.weight, blocks\.2\.ln_1\.bias, \S+, \.\.\.\)$"):
        export_transformers("gpt2", tmp_path / "hf", tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()


def test_a_tokenizer_with_ids_beyond_the_models_vocabulary_is_refused_at_import(tmp_path):
    """It used to export, and every prompt holding such a token failed at generate."""
    transformers = pytest.importorskip("transformers")
    _, tokenizer = _tiny_gpt2(tmp_path / "hf")
    config = transformers.GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=1, n_head=2)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "hf")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'hf' / 'tokenizer.json'}: expected token ids below the "
                                              "model's vocab_size of 300, found ids up to 511 in the tokenizer's "
                                              "vocabulary"):
        export_transformers("gpt2", tmp_path / "hf", tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()
    # a pad token added without resizing the embedding (a common transformers pattern) stays importable:
    # the runtime refuses a prompt holding it
    # (and the config naming it as its pad_token_id, past the vocabulary: GPT-2's embedding has no padding_idx,
    # so transformers builds it, and so does the import; a Llama-family one it refuses, tested with the Llamas)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=512, n_positions=64, n_embd=32, n_layer=1,
                                                         n_head=2, pad_token_id=512)).save_pretrained(tmp_path / "hf")
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    tokenizer.save_pretrained(tmp_path / "hf")
    with pytest.warns(ImportedSettingWarning, match="genai_config.json not written"):   # GPT2Config's eos 50256
        pipe = edgegen.load(export_transformers("gpt2", tmp_path / "hf", tmp_path / "pkg"))
    with pytest.raises(InputError, match=r"^prompt: expected text of tokens the model has rows for \(ids below its "
                                         r"vocab_size 512\), found '\[PAD\]', id 512 \(a token added"):
        pipe.generate("[PAD]", max_new_tokens=2)   # it named the id alone, as "--prompt (as tokens)"
    with pytest.raises(InputError, match=r"expected token ids, integers in \[0, 512\), found 0.0 \(float\)$"):
        pipe.generate([0.0, 1.5], max_new_tokens=2)   # said as not integers: 0.0 lies in the range


def _until_eos(ids, eos=0):
    ids = list(ids)
    return ids[:ids.index(eos) + 1] if eos in ids else ids


def test_imported_gpt2_greedy_equals_transformers_generate(tmp_path, capsys):
    model, tokenizer = _tiny_gpt2(tmp_path / "hf")
    assert main(["export", "gpt2", "--from-transformers", str(tmp_path / "hf"), "--out", str(tmp_path / "pkg")]) == 0
    with pytest.MonkeyPatch.context() as patch:   # an install without the text extra: info says load refuses it
        patch.setitem(sys.modules, "tokenizers", None)
        capsys.readouterr()
        assert main(["info", str(tmp_path / "pkg")]) == 1
        assert "refused   edgegen.load refuses it: tokenizer '" in capsys.readouterr().out
        assert main(["info", str(tmp_path / "pkg"), "--json"]) == 1
        assert json.loads(capsys.readouterr().out)["load_refusal"].startswith("tokenizer '")
        with pytest.raises(MissingExtraError, match=r"needs the text extra: pip install 'edgegen\[text\]'"):
            edgegen.load(tmp_path / "pkg")
        # optimize goes on (its gate runs the graphs alone), saying so before its work, not after (review 184)
        said = []
        patch.setattr("edgegen.optimize.optimize_package",
                      lambda *a, **k: said.append(capsys.readouterr().err) or {"decoder": {"refused": "stopped here"}})
        assert main(["optimize", str(tmp_path / "pkg"), "--precision", "int8-weights"]) == 1
        assert re.search(r"^edgegen: warning: package '.*pkg': edgegen.load refuses it on this machine \(tokenizer '.*"
                         r"needs the text extra.*\); optimize goes on, and its variants load where that is mended$",
                         said[0]), said
    assert main(["info", str(tmp_path / "pkg")]) == 0
    assert "'edgegen optimize' adds int8 / fp16 / fused / int4 / int8-weights variants" in capsys.readouterr().out
    pipe = edgegen.load(tmp_path / "pkg", backend="ort-cpu")
    assert pipe.config.tokenizer["kind"] == "bpe" and pipe.config.eos_token_id == 0
    assert "matches transformers" in pipe.config.data["transformers_check"]
    import tokenizers
    import transformers   # which read the folder: their reading of a tokenizer changes between versions

    imported_with = pipe.package.manifest.provenance["source_checkpoint"]["imported_with"]
    assert imported_with["transformers"] == transformers.__version__ and imported_with["tokenizers"] == tokenizers.__version__
    prompts = ["def main(", "    for key, value in self.items():\n        ", "import"]
    encoded = [tokenizer.encode(p) for p in prompts]
    ours = pipe.generate(encoded, max_new_tokens=NEW_TOKENS, do_sample=False)
    assert [len(row) for row in ours] == [NEW_TOKENS] * 3   # no early end of text: 120 tokens compared per row
    for prompt, row in zip(encoded, ours):        # batch 1 each, and the batch of 3 (left-padded)
        single = model.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)
        assert row == _until_eos(single[0, len(prompt):].tolist())
        assert pipe.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False) == row
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    theirs = model.generate(**batch, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)
    width = batch["input_ids"].shape[1]
    assert ours == [_until_eos(r[width:].tolist()) for r in theirs]
    text = pipe.generate(prompts[0], max_new_tokens=30, do_sample=False)
    assert text == tokenizer.decode(_until_eos(ours[0])[:30], skip_special_tokens=True)
    # a tokenizer record without its sha256 is a broken manifest, not a tokenizer changed after export
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "pkg", broken)
    manifest = json.loads((broken / "edgegen.json").read_text())
    del manifest["config"]["tokenizer"]["sha256"]
    (broken / "edgegen.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="config.tokenizer: expected sha256 to be 64 lowercase hex digits, found None"):
        edgegen.load(broken)
    # what the import wrote beside the graphs (tokenizer files, genai_config.json) is edgegen's: --force replaces it
    assert {"tokenizer_config.json", "genai_config.json"} <= set(os.listdir(tmp_path / "pkg"))
    assert main(["export", "gpt2", "--from-transformers", str(tmp_path / "hf"), "--out", str(tmp_path / "pkg"),
                 "--force"]) == 0


def test_gpt2_with_an_end_token_outside_its_vocabulary_pads_batches(tmp_path):
    """GPT2Config's default eos (50256) is outside a 512-token vocabulary: padding must not use it."""
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=512, n_positions=128, n_embd=32, n_layer=1, n_head=2)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(tmp_path / "hf")
    # GenAI takes no end token outside the vocabulary, and any inside it (token 0 was written) ended its text early
    with pytest.warns(ImportedSettingWarning, match=r"genai_config.json not written \(eos_token_id: expected an "
                                                    r"end-of-text token within the vocabulary \(0 to 511\)"):
        export_transformers("gpt2", tmp_path / "hf", tmp_path / "pkg")
    assert not (tmp_path / "pkg" / "genai_config.json").exists()
    from edgegen.serving.genai import genai_overlay

    with pytest.raises(PackageError, match="expected genai_config.json beside its decoder .*found none"):
        genai_overlay(tmp_path / "pkg")   # it gave an overlay, and GenAI failed on its own terms
    pipe = edgegen.load(tmp_path / "pkg", backend="ort-cpu")
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9]]
    ours = pipe.generate(prompts, max_new_tokens=20, do_sample=False)
    for prompt, row in zip(prompts, ours):
        theirs = model.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False, pad_token_id=0)
        assert row == theirs[0, len(prompt):].tolist()
    with pytest.raises(InputError, match="text"):
        pipe.generate([1, 2, 3], stop="\n")
    with pytest.raises(InputError, match="cache_budget_mb"):
        pipe.generate([1, 2, 3], cache_budget_mb="lots")


def test_gpt2_import_refuses_what_it_cannot_convert(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(CheckpointError, match="config.json"):
        import_gpt2(tmp_path, tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(CheckpointError, match="model_type 'gpt2'"):
        import_gpt2(tmp_path, tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "activation_function": "relu"}')
    with pytest.raises(CheckpointError, match="activation_function"):
        import_gpt2(tmp_path, tmp_path)
    assert main(["export", "llama", "--from-transformers", str(tmp_path), "--out", str(tmp_path / "p")]) == 2


def test_generate_command_fits_its_default_and_refuses_what_it_would_ignore(gpt, capsys):
    """From a walkthrough: the default --max-new-tokens (200) fits what the 256-token context
    leaves after a long prompt; a second --prompt, and sampling settings under greedy decoding,
    are refused, not ignored; --stop takes a token id with --prompt-ids; a refusal names the flag."""
    pkg = str(gpt["pkg"])
    long_prompt = "import os, sys, re, json, collections, itertools, functools\n" * 2   # 120 byte tokens
    assert main(["generate", pkg, "--prompt", long_prompt, "--greedy"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(long_prompt) and 0 < len(printed) - 1 - len(long_prompt) <= 256 - 120   # a character per token at most
    for args, message in ((["--prompt", "def ", "--prompt", "class "], "--prompt: expected once, found it given twice "
                                                                       "('def ' and 'class ')"),
                          (["--prompt", "def ", "--greedy", "--temperature", "0.5"], "--temperature: expected with "
                                                                                     "sampling (--sample), found --greedy"),
                          (["--prompt", "def ", "--top-p", "2"], "--top-p: expected a number above 0 and at most 1 (the kept probability mass), found 2"),
                          (["--prompt", "def ", "--max-new-tokens", "0"], "--max-new-tokens: expected a positive integer"),
                          (["--prompt", long_prompt, "--max-new-tokens", "200"], "--prompt (120 tokens) + --max-new-tokens "
                                                                                  "(200): expected at most the model's "
                                                                                  "context of 256 tokens, found 320"),
                          (["--prompt", "def ", "--label", "3"], "found --label, an option of cgan, diffusion, "
                                                                 "controlnet, ldm, pixelcnn or wavenet packages")):
        assert main(["generate", pkg, *args]) == 2
        refused = capsys.readouterr()
        assert message in refused.err and refused.out == "", refused.err
    assert main(["generate", pkg, "--prompt-ids", "100,101,102,32", "--max-new-tokens", "8", "--greedy"]) == 0
    ids = capsys.readouterr().out.split()
    assert main(["generate", pkg, "--prompt-ids", "100,101,102,32", "--max-new-tokens", "8", "--greedy",
                 "--stop", ids[5]]) == 0   # the second new token's id: the text ends after its first appearance
    stopped = capsys.readouterr().out.split()
    assert stopped == ids[:ids.index(ids[5], 4) + 1]
    # the ids' refusal names --prompt-ids, not --prompt; a stop of non-ASCII digits is text, not an int() crash
    assert main(["generate", pkg, "--prompt-ids", "1,999", "--max-new-tokens", "2"]) == 2
    assert capsys.readouterr().err.startswith("edgegen: error: --prompt-ids: expected token ids")
    assert main(["generate", pkg, "--prompt-ids", "1,2", "--stop", "\u00b2", "--max-new-tokens", "2"]) == 2
    assert "stop: expected token ids for a prompt of token ids, found text" in capsys.readouterr().err
    assert main(["generate", pkg, "--prompt-ids", "1,2", "--stop", "-5", "--max-new-tokens", "2"]) == 2
    assert "--stop: expected token ids in [0, 256), found -5" in capsys.readouterr().err   # it said "found text ['-5']"
    assert main(["generate", pkg, "--prompt", "def", "--cache-budget-mb", "0.001"]) == 2   # advice in the flags' names
    assert "tokens: expected at most the budget of 0.001 MB, found" in (said := capsys.readouterr().err)
    assert said.rstrip().endswith("needed (lower --max-new-tokens or the prompt, or raise --cache-budget-mb)")   # no batch here
    assert main(["generate", pkg, "--prompt", "x" * 256]) == 2   # nothing left for the default: the prompt's fault
    assert "--prompt: expected fewer tokens than the model's context of 256, found 256" in capsys.readouterr().err
    # Python's default of 64 new tokens fits the prompt too (a 220-token prompt was refused: 284 > 256)
    pipe, totals = edgegen.load(pkg), set()
    pipe.generate([100] * 220, do_sample=False, callback=lambda done, total: totals.add(total))
    assert totals == {36}
    with pytest.raises(InputError, match=r"^prompt: expected fewer tokens than the model's context of 256, found 256$"):
        pipe.generate([100] * 256)
    # of a batch, the prompt too long is named by its index
    with pytest.raises(InputError, match=r"^prompt \[1\] \(200 tokens\) \+ max_new_tokens \(60\): expected at most the "
                                         r"model's context of 256 tokens, found 260$"):
        pipe.generate([[100] * 3, [100] * 200], max_new_tokens=60)
    # a stop string of bytes the command line could not decode never matches: refused, as in the prompt
    assert main(["generate", pkg, "--prompt", "def", "--stop", "a\udcff", "--max-new-tokens", "2"]) == 2
    assert "stop: expected text UTF-8 can encode, found '\\udcff' at character 1" in capsys.readouterr().err
    with pytest.raises(InputError, match=r"ids: expected token ids from 0 to 255 \(this tokenizer's bytes\), found 300$"):
        edgegen.load(pkg).tokenizer.decode([104, 300])   # was bytes()'s bare ValueError


def test_generate_command_streams_text(gpt, capsys, tmp_path):
    out = tmp_path / "continuation.txt"
    assert main(["generate", str(gpt["pkg"]), "--prompt", "def ", "--max-new-tokens", "30", "--seed", "0",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("def ") and out.read_text() == printed.rstrip("\n")
    # the reader of stdout going away (| head -c 5) ends the command quietly, and --out still gets the whole text
    piped = subprocess.run(f"{shlex.quote(sys.executable)} -m edgegen.cli generate {shlex.quote(str(gpt['pkg']))} --prompt "
                           f"'def ' --max-new-tokens 120 --seed 0 --out {shlex.quote(str(tmp_path / 'piped.txt'))} "
                           "| head -c 5; exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", capture_output=True,
                           text=True)
    assert piped.stdout == "def " + (tmp_path / "piped.txt").read_text()[4:5]
    assert piped.returncode == 141 and "error" not in piped.stderr, piped.stderr
    assert len((tmp_path / "piped.txt").read_text()) > 5 and (tmp_path / "piped.txt").read_text().startswith("def ")
    assert main(["generate", str(gpt["pkg"]), "--max-new-tokens", "3"]) == 2
    assert "--prompt" in capsys.readouterr().err
    # a refused option prints no text before the error, and the hint names the command line's flag
    assert main(["generate", str(gpt["pkg"]), "--prompt", "def ", "--temperature", "0"]) == 2
    refused = capsys.readouterr()
    assert refused.out == "" and "--greedy on the command line" in refused.err
    assert main(["generate", str(gpt["pkg"]), "--prompt", "def ", "--greedy", "--seed", "7"]) == 2   # it changed nothing
    assert "--seed: expected with sampling (--sample), found --greedy" in capsys.readouterr().err
    # prompt lookup: the same text; edgegen bench times it beside the plain loop
    printed = []
    for drafts in ("0", "4"):
        assert main(["generate", str(gpt["pkg"]), "--prompt", "def ", "--max-new-tokens", "60", "--greedy",
                     "--prompt-lookup", drafts]) == 0
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1] and len(printed[0]) > len("def ") + 30
    report_path = tmp_path / "bench.json"
    assert main(["bench", str(gpt["pkg"]), "--steps", "4"]) == 2   # sampler steps: not a token model's
    assert "generates tokens" in capsys.readouterr().err
    assert main(["bench", str(gpt["pkg"]), "--iters", "20", "--warmup", "0", "--prompt-lookup", "3", "--no-energy",
                 "--json", str(report_path)]) == 0
    printed = capsys.readouterr().out
    assert "prompt lookup, 3 drafts per call" in printed
    report = json.loads(report_path.read_text())
    # the memory-bandwidth bound: what a decode step reads, as onnx sizes the decoder's weights
    bound, config = report["generation"]["bound"], json.loads((gpt["pkg"] / "edgegen.json").read_text())["config"]
    decoder = onnx.load(str(gpt["pkg"] / "decoder.onnx"))
    only_gathered = {n.input[0] for n in decoder.graph.node if n.op_type == "Gather"} - \
        {name for n in decoder.graph.node for i, name in enumerate(n.input) if n.op_type != "Gather" or i > 0}
    weights = sum(numpy_helper.to_array(t).nbytes for t in decoder.graph.initializer if t.name not in only_gathered)
    assert bound["weights_mb"] == round(weights / 1e6, 3)
    tokens = bound["after_tokens"]
    assert tokens == 32 + 127 / 2   # the middle of the streamed run: a 32-token prompt, 128 new tokens
    cache = 2 * config["n_layer"] * (config.get("n_kv_head") or config["n_head"]) * config["head_dim"] * tokens * 4
    assert bound["kv_cache_mb"] == round(cache / 1e6, 3)
    from edgegen.cli import BELOW_THE_BOUND
    from edgegen.wording import counted

    assert bound["bandwidth_gb_s"] > 0 and counted(report["threads"], "thread") in bound["bandwidth_measured_by"]
    assert bound["bound_ms"] == pytest.approx((weights + cache) / (bound["bandwidth_gb_s"] * 1e9) * 1e3, rel=1e-2)
    assert bound["tpot_over_bound"] == pytest.approx(report["generation"]["tpot_ms_p50"] / bound["bound_ms"], rel=1e-2)
    assert f"TPOT p50 is {bound['tpot_over_bound']:.2f}x that" in printed
    g = report["generation"]   # the mean beside the percentiles, which hide a loaded machine's slow tokens
    assert g["tpot_ms_mean"] > 0 and f"per output token p50 {g['tpot_ms_p50']:.3f} ms (p90 {g['tpot_ms_p90']:.3f}, " \
        f"mean {g['tpot_ms_mean']:.3f})" in printed
    assert (BELOW_THE_BOUND in printed) == (bound["tpot_over_bound"] < 1)   # said where the bound means nothing
    assert report["prompt_lookup"]["drafts"] == 3 and report["prompt_lookup"]["same_tokens"] is True
    assert report["prompt_lookup"]["speedup_p50"] > 0
    assert {r["engine"] for r in report["results"]} == {"edgegen ort-cpu", "edgegen ort-cpu, prompt lookup 3"}


@pytest.mark.parametrize("case, why", [
    ("ort-cuda", "the bound reads the CPU's memory bandwidth, and backend ort-cuda decodes on the GPU"),
    ("tensorrt", "the bound reads the CPU's memory bandwidth, and backend tensorrt decodes on the GPU"),
    ("fp16", "ONNX Runtime's CPU kernels may run fp16 weights as float32 converted when the graph loads"),
    ("a family's own pipeline", "the 'gpt' family's pipeline does not say what a decode step reads"),
    ("an unknown weight type", "graph 'decoder.onnx': expected initializers of data types with a known size")])
def test_bench_says_where_it_cannot_put_decoding_against_the_bound(gpt, monkeypatch, case, why):
    """The bound reads the CPU's memory bandwidth and the bytes the graph stores: a GPU backend,
    fp16 weights on the CPU (converted at load), a token family's pipeline that does not say
    what a decode step reads, and a weight it cannot size are not measured against it, and the
    report says why (no GPU here: the pipeline reports itself as a GPU backend)."""
    from edgegen.bench import bench_generation
    from edgegen.runtimes.pipeline import Pipeline

    pipe = edgegen.load(gpt["pkg"], threads=1)
    if case == "fp16":
        pipe.precision = "fp16"
    elif case.startswith("a family"):
        monkeypatch.delattr(type(pipe), "decode_read_bytes")
    elif case.startswith("an unknown"):   # the timings stand; only the bound is left out
        def unsized(tokens):
            raise PackageError(f"{why}, found ['w'] of a type this edgegen does not know (update edgegen)")
        monkeypatch.setattr(pipe, "decode_read_bytes", unsized)
    else:
        monkeypatch.setattr(Pipeline, "backend", property(lambda self: case))
    report = bench_generation(pipe, gpt["pkg"], batch=1, iters=10, warmup=0, threads=1, energy=False)
    assert set(report["generation"]["bound"]) == {"not_measured"}
    assert report["generation"]["bound"]["not_measured"].startswith(why)
    assert report["generation"]["tpot_ms_p50"] > 0


def test_bench_of_a_model_that_ends_its_text_at_once_says_so(gpt, monkeypatch, capsys):
    """Every streamed run made one token (end of text first): no time between tokens, which
    numpy's percentile of nothing turned into an IndexError."""
    from edgegen.bench import bench_generation, per_token_text

    pipe = edgegen.load(gpt["pkg"], threads=1)
    monkeypatch.setattr(pipe, "stream", lambda prompt, **options: iter([7]))
    report = bench_generation(pipe, gpt["pkg"], batch=1, iters=10, warmup=0, threads=1, energy=False)
    generation = report["generation"]
    assert generation["ttft_ms_p50"] > 0 and generation["tpot_ms_p50"] is None and generation["tpot_ms_mean"] is None
    assert generation["bound"] == {"not_measured": "the streamed run made one token: no time per token to put against it"}
    assert per_token_text(generation) == "per output token not measured (the model ended its text after one token)"


def test_bench_and_generate_refuse_tensorrt_for_the_kv_cache_loop_before_loading(gpt, capsys, tmp_path):
    """Its loop binds ONNX Runtime's IO: TensorRT's engines built (minutes on a device) for a run that
    then failed; triton refused it already (helper 130)."""
    from edgegen.cli import main

    for args in (["bench", str(gpt["pkg"])], ["generate", str(gpt["pkg"]), "--prompt", "def ", "--out",
                                              str(tmp_path / "t.txt")]):
        assert main([*args, "--backend", "tensorrt"]) == 2
        assert ("expected a backend gpt's generation runs on, found TensorRT, which its KV-cache loop cannot use" in
                capsys.readouterr().err)
    assert not (tmp_path / "t.txt").exists()


def test_text_generation_runs_where_torch_cannot_be_imported(gpt):
    script = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'onnx', 'onnxscript', 'safetensors', 'transformers'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import edgegen\n"
        "pipe = edgegen.load(sys.argv[1], backend='ort-cpu')\n"
        "text = pipe.generate('def ', max_new_tokens=20, seed=0)\n"
        "assert isinstance(text, str) and ''.join(pipe.stream('def ', max_new_tokens=20, seed=0)) == text\n"
        "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", script, str(gpt["pkg"])], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_gpt2_without_tokenizer_files_takes_token_ids_and_pickles_are_refused(tmp_path):
    from edgegen.errors import ValidationError
    from edgegen.families.gpt.hf_import import check_against_transformers

    model, _ = _tiny_gpt2(tmp_path / "hf")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"):
        (tmp_path / "hf" / name).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        ckpt = import_gpt2(tmp_path / "hf", Path(scratch))
        assert ckpt.data["tokenizer"] == "none" and not ckpt.files
        with torch.no_grad():   # a conversion off by a little in one weight is still refused
            next(ckpt.model.parameters()).mul_(1.01)
        with pytest.raises(ValidationError, match="does not reproduce transformers: logits @ batch 2: .*MISMATCH"):
            check_against_transformers(tmp_path / "hf", ckpt.model, 512, 256)
        with torch.no_grad():
            next(ckpt.model.parameters()).div_(1.01)
        export_model(ckpt, tmp_path / "pkg")
    pipe = edgegen.load(tmp_path / "pkg", backend="ort-cpu")
    assert len(pipe.generate([5, 6, 7], max_new_tokens=5, seed=0)) <= 5
    with pytest.raises(InputError, match=r"no tokenizer .* expected token ids \(--prompt-ids on the command line\), found text"):
        pipe.generate("text")
    # the command line takes ids too, and prints the new ones as they come
    greedy = pipe.generate([5, 6, 7], max_new_tokens=5, do_sample=False)
    out = tmp_path / "ids.txt"
    assert main(["generate", str(tmp_path / "pkg"), "--prompt-ids", "5,6,7", "--max-new-tokens", "5", "--greedy",
                 "--out", str(out)]) == 0
    assert out.read_text() == " ".join(map(str, [5, 6, 7, *greedy]))
    assert main(["generate", str(tmp_path / "pkg"), "--prompt-ids", "5", "--out", str(tmp_path / "ids.png")]) == 2
    assert not (tmp_path / "ids.png").exists()   # text is written to .txt only, refused before generating
    assert main(["generate", str(tmp_path / "pkg"), "--prompt-ids", "5", "--out", str(tmp_path / ".txt")]) == 2
    assert not (tmp_path / ".txt").exists()   # a hidden file of no name
    assert main(["generate", str(tmp_path / "pkg"), "--prompt-ids", "5;6", "--out", str(out)]) == 2
    assert main(["generate", str(tmp_path / "pkg"), "--prompt-ids", "5", "--prompt", "x", "--out", str(out)]) == 2
    (tmp_path / "hf" / "model.safetensors").rename(tmp_path / "hf" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickled weights are not loaded"):
        import_gpt2(tmp_path / "hf", tmp_path)


def test_int8_and_fp16_decoders_pass_the_token_gate_and_generate(gpt, tmp_path):
    import shutil

    from edgegen.optimize import optimize_package

    pkg = tmp_path / "pkg"
    shutil.copytree(gpt["pkg"], pkg)
    for precision in ("int8", "fp16"):
        record = optimize_package(pkg, precision, calibration=16, target="tensorrt", progress=lambda line: None)["decoder"]
        assert record["gate"]["metric"] == "top-1 agreement" and record["gate"]["passed"], record
        pipe = edgegen.load(pkg, backend="ort-cpu", precision=precision)
        assert len(pipe.generate(list(b"def "), max_new_tokens=20, do_sample=False)) == 20


def test_weight_only_int8_of_a_trained_decoder_is_gated_on_held_out_text_perplexity(gpt, tmp_path):
    import shutil

    from edgegen.optimize import MAX_PERPLEXITY_RATIO, optimize_package

    pkg = tmp_path / "pkg"
    shutil.copytree(gpt["pkg"], pkg)
    record = optimize_package(pkg, "int8-weights", target="ort-cpu",
                              progress=lambda line: None)["decoder"]
    gate = record["gate"]
    assert record["gate_inputs"] == "held-out standard-library text" and record["form"].startswith("MatMulNBits")
    assert gate["perplexity_ratio"] == pytest.approx(gate["perplexity"] / gate["fp32_perplexity"], rel=1e-3)
    # a trained model: 8-bit weights keep its predictions (int4 is judged the same way; on this
    # 2-layer, 64-wide model it may not pass)
    assert gate["passed"] and gate["value"] >= 0.95 and gate["perplexity_ratio"] <= MAX_PERPLEXITY_RATIO, gate
    if "file" in record:   # ort-cpu keeps it where it pays
        pipe = edgegen.load(pkg, precision="int8-weights")
        assert len(pipe.generate(list(b"def "), max_new_tokens=20, do_sample=False)) == 20


def test_fused_variant_of_an_opset_18_decoder_is_exact_and_refused_for_tensorrt(gpt, tmp_path, capfd):
    import shutil

    from edgegen.optimize import optimize_package

    pkg = tmp_path / "pkg18"
    shutil.copytree(gpt["pkg18"], pkg)
    with pytest.raises(ConfigError, match="TensorRT does not read"):
        optimize_package(pkg, "fused", target="tensorrt")
    capfd.readouterr()
    record = optimize_package(pkg, "fused", progress=lambda line: None)["decoder"]
    said = capfd.readouterr()
    assert "shape inference" not in said.out + said.err   # the fusion optimizer's own notes are not the user's
    assert record["gate"]["value"] == 1.0 and record["gate"]["cosine"] > 0.99999
    if "file" in record:   # written only where it was faster here
        fused = onnx.load(str(pkg / record["file"]))
        assert "FastGelu" in {n.op_type for n in fused.graph.node}
        pipe = edgegen.load(pkg, backend="ort-cpu", precision="fused")
        assert pipe.generate(list(b"def "), max_new_tokens=30, do_sample=False) == gpt["model"].greedy(list(b"def "), 30)
    else:
        assert "does not pay" in record["refused"]


@pytest.mark.parametrize("change, message", [
    (dict(vocab_size=300), "vocab_size 300: expected logits of graph 'decoder' to have 300 at axis -1, found 256"),
    (dict(n_layer=3), "n_layer 3: expected the decoder to take that many key caches, found"),
    (dict(n_head=7), "n_head 7: expected past_key_values.0.key of graph 'decoder' to have 7 at axis 1"),
    (dict(eos_token_id=-3), "eos_token_id expected a token id (0 or more), found -3"),
    (dict(pad_token_id=-1), "pad_token_id expected a token id (0 or more), found -1"),
    (dict(block_size=4096), "block_size 4096: expected the decoder to take position 4095, found it refused"),
])
def test_a_manifest_that_disagrees_with_its_graph_is_refused_at_load_with_the_field_named(gpt, tmp_path, change, message):
    """A hand-edited manifest (or a package put together by hand) whose config does not match the
    decoder graph fails at load time, not with garbage text or a gigabyte allocation per call."""
    import json
    import shutil

    from edgegen.errors import ManifestError

    pkg = tmp_path / "pkg"
    shutil.copytree(gpt["pkg"], pkg)
    manifest = json.loads((pkg / "edgegen.json").read_text())
    manifest["config"].update(change)
    (pkg / "edgegen.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=re.escape(message)):
        edgegen.load(pkg)


def test_an_end_token_far_beyond_the_vocabulary_costs_nothing_per_call(gpt, tmp_path):
    """An eos id of 10**9 (a config from elsewhere) can never be generated: it is allowed, and a
    call allocates by the vocabulary, not by the id (it was a 1 GB array on every call)."""
    import json
    import shutil
    import tracemalloc

    pkg = tmp_path / "pkg"
    shutil.copytree(gpt["pkg"], pkg)
    manifest = json.loads((pkg / "edgegen.json").read_text())
    manifest["config"]["eos_token_id"] = 10**9
    (pkg / "edgegen.json").write_text(json.dumps(manifest))
    pipe = edgegen.load(pkg, backend="ort-cpu")
    pipe.generate("def ", max_new_tokens=2, seed=0)
    tracemalloc.start()
    try:
        text = pipe.generate("def ", max_new_tokens=8, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(text, str) and peak < 10 * 2**20


def _genai_greedy(package, prompt: list[int], new_tokens: int, precision: str = "fp32") -> list[int]:
    """ONNX Runtime GenAI's own loop over the package's decoder, read from its genai_config.json
    with edgegen's overlay for the precision (docs/serving.md)."""
    import onnxruntime_genai as og

    from edgegen.serving.genai import genai_overlay

    config = og.Config(str(package))
    config.overlay(genai_overlay(package, precision))
    model = og.Model(config)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + new_tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array([prompt], dtype=np.int32))
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return tokens


def test_genai_is_given_the_end_tokens_inside_the_vocabulary():
    """A Llama config naming [2, 74, 600] on 512 tokens: GenAI refused the model at load
    ("eos_token_id (600) must be in range"), where 600 is never generated anyway."""
    from types import SimpleNamespace

    from edgegen.serving.genai import genai_end_tokens

    def config(eos, more=(), kind="bpe"):
        return SimpleNamespace(eos_token_id=eos, more_eos_token_ids=list(more), vocab_size=512, tokenizer={"kind": kind})

    assert genai_end_tokens(config(2, [74, 600])) == [2, 74]
    assert genai_end_tokens(config(600, [3])) == [3]
    assert genai_end_tokens(config(None, kind="bytes")) == [0]   # the NUL byte, which text does not contain
    assert genai_end_tokens(config(50256)) is None               # any id would be one the model may generate


def test_the_genai_overlay_names_the_fp32_decoder_and_refuses_what_genai_cannot_run(gpt, trained):
    from edgegen.serving.genai import genai_overlay

    assert json.loads(genai_overlay(gpt["pkg"])) == {"model": {"decoder": {"filename": "decoder.onnx"}},
                                                    "search": {"past_present_share_buffer": False}}
    with pytest.raises(PackageError, match=r"int4 variant.* found none"):
        genai_overlay(gpt["pkg"], "int4")
    with pytest.raises(ConfigError, match=r"precision 'int9': expected one of fp32, "):
        genai_overlay(gpt["pkg"], "int9")
    with pytest.raises(PackageError, match=r"expected a GPT package \(ONNX Runtime GenAI runs text decoders\), found a "
                                           r"vae package"):
        genai_overlay(trained["vae"][1])


def test_onnxruntime_genai_runs_the_exported_decoder_with_edgegens_greedy_tokens(gpt, tmp_path):
    pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is in the dev extra (Linux x86-64)")
    prompt = list(b"    def __init__(self")
    ours = edgegen.load(gpt["pkg"]).generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False)
    assert _genai_greedy(gpt["pkg"], prompt, NEW_TOKENS) == ours
    _, tokenizer = _tiny_gpt2(tmp_path / "hf")   # an imported GPT-2, with its end-of-text token
    assert main(["export", "gpt2", "--from-transformers", str(tmp_path / "hf"), "--out", str(tmp_path / "pkg")]) == 0
    prompt = tokenizer.encode("def main(")
    ours = edgegen.load(tmp_path / "pkg").generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False)
    theirs = _genai_greedy(tmp_path / "pkg", prompt, NEW_TOKENS)
    assert theirs[:len(ours)] == ours and len(ours) > 20
    import onnxruntime_genai as og   # its own tokenizer reads the package's tokenizer files

    genai_tokenizer = og.Tokenizer(og.Model(str(tmp_path / "pkg")))
    assert list(genai_tokenizer.encode("def main(")) == prompt
    text = "    for key, value in self.items():\n"   # (random weights' tokens are not all valid UTF-8)
    ids = edgegen.load(tmp_path / "pkg").tokenizer.encode(text)
    assert list(genai_tokenizer.encode(text)) == ids and genai_tokenizer.decode(np.array(ids, dtype=np.int32)) == text


# -- the Llama family: Llama, Qwen2, Mistral -------------------------------------------------------

def _tiny_llama(folder, model_type="llama", **overrides):
    """A random Llama-family checkpoint (peaked logits: initializer_range 0.2, so that greedy ties
    are rare) saved with save_pretrained."""
    transformers = pytest.importorskip("transformers")
    classes = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
               "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
               "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM)}
    config_class, model_class = classes[model_type]
    settings = dict(vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=4, max_position_embeddings=256, initializer_range=0.2, bos_token_id=1,
                    eos_token_id=2, tie_word_embeddings=False)
    settings.update(overrides)
    torch.manual_seed(0)
    model = model_class(config_class(**settings)).eval()
    model.save_pretrained(folder)
    return model


LLAMA_CASES = {
    "llama-mha": ("llama", {}),
    "llama-gqa2-tied": ("llama", {"num_key_value_heads": 2, "tie_word_embeddings": True}),
    "llama-gqa4-head24": ("llama", {"num_key_value_heads": 1, "head_dim": 24}),
    "llama-rope-linear": ("llama", {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
    "llama-rope-llama3": ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                                    "rope_theta": 500000.0}),
    "qwen2-gqa2": ("qwen2", {"num_key_value_heads": 2}),
    "mistral-gqa4": ("mistral", {"num_key_value_heads": 1, "sliding_window": 4096}),
    "llama-two-end-tokens": ("llama", {"eos_token_id": [2, 193]}),   # Llama 3 lists several; 193 ends one prompt here
}


@pytest.mark.parametrize("case", list(LLAMA_CASES))
def test_llama_family_import_greedy_equals_transformers(case, tmp_path):
    """Token for token against transformers' generate, batch 1, through the runtime's KV-cache loop."""
    model_type, overrides = LLAMA_CASES[case]
    model = _tiny_llama(tmp_path / "hf", model_type, **overrides)
    assert main(["export", model_type, "--from-transformers", str(tmp_path / "hf"), "--out", str(tmp_path / "pkg")]) == 0
    pipe = edgegen.load(tmp_path / "pkg", backend="ort-cpu")
    assert "matches transformers" in pipe.config.data["transformers_check"]
    assert pipe.config.cache_heads == model.config.num_key_value_heads
    prompts, compared = [[1, 17, 300, 45, 9, 255], [1, 5]], []
    ends = overrides.get("eos_token_id", [2])
    for prompt in prompts:
        theirs = model.generate(torch.tensor([prompt]), max_new_tokens=40, do_sample=False, pad_token_id=0)[0, len(prompt):]
        ours = pipe.generate(prompt, max_new_tokens=40, do_sample=False)
        stops = [i for i, t in enumerate(theirs.tolist()) if t in ends]
        assert ours == theirs.tolist()[:stops[0] + 1 if stops else None]
        assert case != "llama-two-end-tokens" or prompt != prompts[0] or ours[-1] == 193   # stopped at the second
        compared.append(len(ours))
    assert max(compared) >= 20, f"expected generations long enough to compare, found lengths {compared}"
    # a batch of the two, left-padded, equals each alone
    assert pipe.generate(prompts, max_new_tokens=12, do_sample=False) == [
        pipe.generate(p, max_new_tokens=12, do_sample=False) for p in prompts]


def test_a_llama_layers_projections_run_as_two_matmuls_and_qwen2_keeps_its_biases(tmp_path):
    """The export fuses each layer's q, k and v projections into one MatMul, and gate and up into
    another (export.graph_rewrites.fuse_sibling_matmuls): four MatMuls per layer and the head,
    with Qwen2's q/k/v biases added after the split; greedy tokens still equal transformers', with
    the prompt in one call and in prefill chunks."""
    for model_type in ("llama", "qwen2"):
        reference = _tiny_llama(tmp_path / model_type / "hf", model_type=model_type, num_key_value_heads=2)
        package = export_transformers("llama" if model_type == "llama" else "qwen2", tmp_path / model_type / "hf",
                                      tmp_path / model_type / "pkg")
        graph = onnx.load(str(package / "decoder.onnx")).graph
        ops = [n.op_type for n in graph.node]
        assert ops.count("MatMul") == 4 * 2 + 1 and ops.count("Split") >= 2 * 2, (model_type, ops.count("MatMul"))
        prompt = [1, 17, 42, 99, 7, 300, 12, 5, 64, 128, 33]
        pipe = edgegen.load(package, backend="ort-cpu")
        expected = reference.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, min_new_tokens=12)
        assert pipe.generate(prompt, max_new_tokens=12, do_sample=False) == expected[0, len(prompt):].tolist()
        # rotary positions and grouped-query caches across prefill chunks of 4 (4 + 4 + 3)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("edgegen.families.gpt.pipeline.PREFILL_CHUNK", 4)
            assert pipe.generate(prompt, max_new_tokens=12, do_sample=False) == expected[0, len(prompt):].tolist()


def test_an_imported_grouped_query_llama_decodes_as_transformers_with_its_cache_written_in_place(tmp_path,
                                                                                                 monkeypatch):
    """The in-place form on a Llama: rotary positions and 2 key/value heads per 4 query heads, in
    fp32 (fused) token for token as transformers, prompt in one call and in chunks, batched; and
    the int4 variant for ort-cpu in the form too."""
    reference = _tiny_llama(tmp_path / "hf", num_key_value_heads=2, head_dim=24)
    package = export_transformers("llama", tmp_path / "hf", tmp_path / "pkg")
    assert "ort_form" in _in_place_variant(package)
    pipe = edgegen.load(package, precision="fused")
    assert pipe._in_place
    prompt = [1, 17, 42, 99, 7, 300, 12, 5, 64, 128, 33]
    expected = reference.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False, min_new_tokens=16)
    assert pipe.generate(prompt, max_new_tokens=16, do_sample=False) == expected[0, len(prompt):].tolist()
    monkeypatch.setattr("edgegen.families.gpt.pipeline.PREFILL_CHUNK", 4)
    monkeypatch.setattr("edgegen.families.gpt.pipeline.CACHE_GROWTH", 5)
    assert pipe.generate(prompt, max_new_tokens=16, do_sample=False) == expected[0, len(prompt):].tolist()
    prompts = [prompt, [1, 5]]
    assert pipe.generate(prompts, max_new_tokens=12, do_sample=False) == [
        pipe.generate(p, max_new_tokens=12, do_sample=False) for p in prompts]
    for precision, options in (("int4", {"gate_threshold": 0.0}), ("int8", {"calibration": 16, "gate_threshold": 0.0})):
        record = _in_place_variant(package, precision, **options)
        assert "ort_form" in record, record
        pipe = edgegen.load(package, precision=precision)
        assert pipe._in_place and pipe.generate(prompts, max_new_tokens=12, do_sample=False) == \
            pipe.generate(prompts, max_new_tokens=12, do_sample=False, use_cache=False)
        # what edgegen bench's bound counts: the variant's own bytes, less the tables decoding
        # looks rows up in (the untied embedding, the rotary caches); 2 key/value heads of 24
        graph = onnx.load(str(package / record["file"]))
        sizes = {t.name: numpy_helper.to_array(t).nbytes for t in graph.graph.initializer}
        read = pipe.decode_read_bytes(10)
        assert read["weights"] == sum(sizes.values()) - sum(sizes[name] for name in sizes
                                                            if name.startswith(("embed_tokens", "rope_")))
        assert read["kv_cache"] == 2 * reference.config.num_hidden_layers * 2 * 24 * 10 * 4
    # no checkpoint of edgegen's: an imported package's int8 calibrates on held-out windows, apart from the gate's
    assert record["calibration"]["source"].startswith("random token ids")


def _template_tokenizer(folder):
    """A byte-level BPE tokenizer.json whose post-processor puts <s> (id 1) in front of a text, as a
    Llama's does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator([path.read_text() for path in stdlib_files()[:40]], trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer.save(str(folder / "tokenizer.json"))


def test_a_llama_config_of_mistyped_settings_is_refused_naming_them(tmp_path):
    """Each failed in float(), min(), dict() or torch with a traceback that called itself edgegen's
    bug (exit 3); a pad_token_id of -1 (early Llama conversions' "none", which transformers loads)
    was refused as a pad past the vocabulary."""
    _tiny_llama(tmp_path / "hf")
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    for change, said in (({"rms_norm_eps": "abc"}, "rms_norm_eps a positive number, found 'abc'"),
                         ({"rope_parameters": "x"}, "rope_parameters a table of settings, found 'x'"),
                         ({"rope_parameters": {"rope_type": "default", "rope_theta": "1e4"}},
                          "rope_parameters' rope_theta a positive number, found '1e4'"),
                         ({"max_position_embeddings": "128"}, "max_position_embeddings a positive integer, found '128'"),
                         ({"head_dim": -16}, "head_dim a positive integer, found -16"),
                         ({"num_key_value_heads": 3}, "num_key_value_heads a divisor of num_attention_heads 4"),
                         ({"rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0}},
                          "rope type 'linear' of .*: expected the settings transformers computes its frequencies from, "
                          "found it failing: KeyError: .*factor")):
        (tmp_path / "hf" / "config.json").write_text(json.dumps({**written, **change}))
        with pytest.raises(CheckpointError, match=said.replace("(", r"\(").replace(")", r"\)")):
            export_transformers("llama", tmp_path / "hf", tmp_path / "pkg")
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**written, "pad_token_id": -1}))
    assert edgegen.load(export_transformers("llama", tmp_path / "hf", tmp_path / "pkg")).config.pad_token_id is None


def test_an_imported_model_is_gated_on_the_text_data_names(tmp_path):
    """export --data FILE was read as the standard library's text for an imported model, while the
    manifest recorded FILE; without a tokenizer it cannot be encoded, and is refused."""
    from tokenizers import Tokenizer

    from edgegen.families.gpt.export import _gpt_data
    from edgegen.families.gpt.hf_import import import_transformers

    _tiny_llama(tmp_path / "hf")
    _template_tokenizer(tmp_path / "hf")
    text = tmp_path / "mine.txt"
    text.write_text("".join(f"value_{i} = compute({i}, {i * 7})\n" for i in range(3000)), encoding="utf-8")
    ckpt = import_transformers("llama", tmp_path / "hf", tmp_path)
    assert _gpt_data(ckpt, "transformers").name == "stdlib"
    mine = _gpt_data(ckpt, str(text))
    _, held_out = read_corpus(str(text))
    expected = Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json")).encode(held_out.decode()).ids
    assert mine.name == str(text) and mine.test[0].tolist() == expected[:len(mine.test[0])]
    (tmp_path / "hf" / "tokenizer.json").unlink()
    with pytest.raises(DataError, match=r"expected a model with a tokenizer to encode text with, found one imported "
                                        r"without tokenizer files"):
        _gpt_data(import_transformers("llama", tmp_path / "hf", tmp_path), str(text))


def test_a_tokenizer_of_vocab_and_merges_alone_encodes_as_transformers_does(tmp_path):
    """vocab.json + merges.txt without tokenizer.json was always built as GPT-2's byte-level BPE: a
    Qwen2's prompt split its digits otherwise, and its special tokens into characters, without a word."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    transformers = pytest.importorskip("transformers")
    _tiny_llama(tmp_path / "hf", "qwen2")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.train_from_iterator([path.read_text() for path in stdlib_files()[:40]], trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.model.save(str(tmp_path / "hf"))   # vocab.json and merges.txt
    (tmp_path / "hf" / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "added_tokens_decoder": {str(i): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                                          "normalized": False, "single_word": False}
                                 for i, t in enumerate(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])}}))
    assert main(["export", "qwen2", "--from-transformers", str(tmp_path / "hf"), "--out", str(tmp_path / "pkg")]) == 0
    ours = edgegen.load(tmp_path / "pkg", backend="ort-cpu").tokenizer
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    for text in ("x = 1234 + 56", "return\n\n    ", "<|im_start|>user\nhi<|im_end|>"):
        assert ours.encode(text) == theirs(text)["input_ids"], text
    assert len(ours.encode("<|im_start|>")) == 1


def _sentencepiece_tokenizer(folder):
    """A Llama-2 / Mistral-style tokenizer.json: "▁" for spaces, byte fallback, and a decoder that
    strips the space the first token of a text decodes to."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                           decoders.Strip(" ", 1, 0)])
    special = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tokenizer.train_from_iterator([path.read_text() for path in stdlib_files()[:10]],
                                  trainers.BpeTrainer(vocab_size=400, special_tokens=special))
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer.save(str(folder / "tokenizer.json"))


def test_the_new_text_continues_the_prompts_with_a_sentencepiece_tokenizer(tmp_path):
    """The decoder strips the space of a text's first token: decoded on its own, the first new
    word lost its space ("x =in", where transformers decodes "x = in"). The new text is now what
    decoding prompt and continuation together adds to the prompt's text; a stop id of the
    caller's keeps its token's text (the row ends after it), the end-of-text token's is left out."""
    from edgegen.runtimes.tokenizer import BPETokenizer

    (tmp_path / "hf").mkdir()
    _sentencepiece_tokenizer(tmp_path / "hf")
    bpe = BPETokenizer(tmp_path / "hf" / "tokenizer.json")
    prompt = bpe.encode("x =", special_tokens=True)
    words = [i for token, i in bpe._tokenizer.get_vocab().items() if token.startswith("▁") and token.strip("▁")]
    for first in words[:20]:
        stream = bpe.stream_decoder(prompt)
        new = [first, *words[:3]]
        assert "".join(stream.step(t) for t in new) + stream.flush() == \
            bpe.decode(prompt + new)[len(bpe.decode(prompt)):], bpe.decode([first])
    # a prompt that ends in byte-fallback tokens: the window must not start inside a character (the
    # new text came out as U+FFFD), wherever the prompt and its continuation are cut apart
    for text in ("ok 🎉🎉鬱 a", "x = ñ z", "naïve café 🎉 é"):
        ids = bpe.encode(text, special_tokens=True)
        for cut in (c for c in range(1, len(ids)) if "\ufffd" not in bpe.decode(ids[:c])):   # a text prompt's cuts
            stream = bpe.stream_decoder(ids[:cut])
            assert "".join(stream.step(t) for t in ids[cut:]) + stream.flush() == \
                bpe.decode(ids)[len(bpe.decode(ids[:cut])):], (text, cut)

    model = _tiny_llama(tmp_path / "hf")
    with torch.no_grad():   # logit 0 but for words with their space in front: greedy picks those
        model.lm_head.weight[[i for i in range(512) if i not in words]] = 0
    model.save_pretrained(tmp_path / "hf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", edgegen.ImportedSettingWarning)
        pipe = edgegen.load(export_transformers(None, tmp_path / "hf", tmp_path / "pkg"))
    for text in ("x =", "def main(", "import os\nfor", "class A:"):
        ids = pipe.tokenizer.encode(text, special_tokens=True)
        new = pipe.generate(ids, max_new_tokens=12)
        assert len(new) == 12 and "\ufffd" not in bpe.decode(new)
        assert pipe.generate(text, max_new_tokens=12) == bpe.decode(ids + new)[len(bpe.decode(ids)):], text
        assert "".join(pipe.stream(text, max_new_tokens=12)) == pipe.generate(text, max_new_tokens=12)
        stop = new[3]
        kept = pipe.generate(text, max_new_tokens=12, stop=stop)   # the row ends after the stop token, shown
        assert kept == bpe.decode(ids + new[:new.index(stop) + 1])[len(bpe.decode(ids)):], text


def test_an_imported_tokenizer_is_its_file_and_a_transformers_that_splits_otherwise_is_said(tmp_path):
    """transformers 5 rebuilds a Llama tokenizer.json from its vocabulary with LlamaTokenizer's own
    Metaspace, without the file's Prepend/Replace normalizer, and splits a prompt that starts with
    a space otherwise than the file (and sentencepiece); upstream treats it as a bug, so the package
    keeps the file and the import says where they differ. A truncation saved in the file cut every
    prompt, where transformers' tokenizer(text) takes it whole. A tokenizer of the folder's own code
    is never run (transformers asked on the terminal, then ran it)."""
    transformers = pytest.importorskip("transformers")
    from edgegen.families.gpt.hf_import import _warn_where_transformers_splits_otherwise
    from edgegen.runtimes.tokenizer import BPETokenizer
    from tokenizers import Tokenizer

    folder = tmp_path / "hf"
    _tiny_llama(folder)
    _sentencepiece_tokenizer(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    whole = Tokenizer.from_file(str(folder / "tokenizer.json"))
    written = Tokenizer.from_file(str(folder / "tokenizer.json"))
    written.enable_truncation(4)
    written.save(str(folder / "tokenizer.json"))
    text = "import os\nfor i in range(3): pass"
    assert BPETokenizer(folder / "tokenizer.json").encode(text) == whole.encode(text, add_special_tokens=False).ids
    assert len(whole.encode(text).ids) > 4
    reference = transformers.AutoTokenizer.from_pretrained(folder)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", ImportedSettingWarning)
        _warn_where_transformers_splits_otherwise(folder, folder / "tokenizer.json")
    if reference(" hello world").input_ids != whole.encode(" hello world").ids:   # transformers 5.25 rebuilds it so
        assert len(said) == 1 and re.match(rf".*tokenizer.json: transformers {re.escape(transformers.__version__)} splits "
                                           r"' hello world' as \[.*\], the file as \[.*\]; the package keeps the file "
                                           r"as written", str(said[0].message)), [str(w.message) for w in said]
    else:   # a transformers that splits as the file does: nothing to say
        assert not said, [str(w.message) for w in said]

    (folder / "tokenizer_config.json").write_text(json.dumps(   # a class of the checkpoint's own code
        {"tokenizer_class": "CustomTokenizer", "auto_map": {"AutoTokenizer": ["tokenization_custom.CustomTokenizer", None]}}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImportedSettingWarning)
        _warn_where_transformers_splits_otherwise(folder, folder / "tokenizer.json")   # no prompt, no warning


def test_llama_import_reads_what_transformers_generate_reads(tmp_path, capsys):
    """generation_config.json's end tokens (an instruct model's end of turn is often only there) and
    sampling settings (the package's defaults, over transformers': greedy, top-k 50), a warning
    naming the settings edgegen has no counterpart for, a text prompt encoded with the tokenizer's
    special tokens (<s>), and the architecture read from config.json when not named."""
    transformers = pytest.importorskip("transformers")
    _tiny_llama(tmp_path / "hf")
    _template_tokenizer(tmp_path / "hf")
    generation = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    generation.update(eos_token_id=[2, 193], repetition_penalty=1.3, temperature=1.0, no_repeat_ngram_size=0)
    (tmp_path / "hf" / "generation_config.json").write_text(json.dumps(generation))
    assert main(["export", "--from-transformers", str(tmp_path / "hf"), "--out", str(tmp_path / "pkg")]) == 0
    assert "warning" not in capsys.readouterr().err   # every setting applied (a neutral n-gram size changes nothing)
    pipe = edgegen.load(tmp_path / "pkg")
    assert (pipe.config.data["eos_token_id"], pipe.config.data["more_eos_token_ids"]) == (2, [193])
    assert pipe.generation_defaults == {"do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0,
                                        "repetition_penalty": 1.3}

    reference = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), dtype=torch.float32).eval()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "hf" / "tokenizer.json"))
    compared = []
    for text in ("def main(", "import os\nfor", "class A:"):
        ids = tokenizer(text).input_ids
        assert ids[0] == 1 and pipe.tokenizer.encode(text, special_tokens=True) == ids
        theirs = reference.generate(torch.tensor([ids]), max_new_tokens=30)[0, len(ids):].tolist()   # its own config
        theirs = theirs[:-1] if theirs[-1] in (2, 193) else theirs   # edgegen's text leaves the end token out
        ours = pipe.generate(text, max_new_tokens=30)   # the package's defaults: greedy, with the penalty
        assert ours == tokenizer.decode(theirs), text
        compared.append(len(theirs))
    assert max(compared) >= 10   # generations long enough to compare
    # an import by an edgegen before December 3, 2026 recorded none of these: it sampled, and said
    # nothing (helper 94); now its load says so, and this package's does not
    with warnings.catch_warnings():
        warnings.simplefilter("error", edgegen.ImportedSettingWarning)
        edgegen.load(tmp_path / "pkg")
    old = shutil.copytree(tmp_path / "pkg", tmp_path / "imported-earlier")
    manifest = json.loads((old / "edgegen.json").read_text())
    del manifest["config"]["data"]["generation_defaults"], manifest["config"]["generation_defaults"]
    (old / "edgegen.json").write_text(json.dumps(manifest))
    with pytest.warns(edgegen.ImportedSettingWarning, match=r"expected the decoding defaults of the model's "
                                                            r"generation_config.json, found none recorded"):
        assert edgegen.load(old).generation_defaults["do_sample"] is True

    (tmp_path / "hf" / "tokenizer.json").unlink()
    (tmp_path / "hf" / "tokenizer.model").write_bytes(b"a sentencepiece model")
    generation.update(do_sample=True, temperature=0.6, top_k=20, no_repeat_ngram_size=3, repetition_penalty=1.0)
    (tmp_path / "hf" / "generation_config.json").write_text(json.dumps(generation))
    with pytest.warns(edgegen.ImportedSettingWarning) as warned:
        sampled = export_transformers(None, tmp_path / "hf", tmp_path / "ids-only")
    assert [str(w.message).split(": ", 1)[1] for w in warned] == [
        "a sentencepiece tokenizer, which edgegen does not read; the package takes token ids only (save the tokenizer "
        "with transformers' fast tokenizer to get a tokenizer.json)",
        "no_repeat_ngram_size 3: transformers' generate applies these by default; edgegen has no such settings and "
        "does not apply them"]
    pipe = edgegen.load(sampled)
    prompt = [1, 17, 300, 45]
    assert pipe.generate(prompt, max_new_tokens=20, seed=3) == pipe.generate(
        prompt, max_new_tokens=20, seed=3, do_sample=True, temperature=0.6, top_k=20, top_p=1.0, repetition_penalty=1.0)
    assert pipe.generate(prompt, max_new_tokens=20, seed=3) != pipe.generate(prompt, max_new_tokens=20, seed=3, top_k=0)
    genai = json.loads((sampled / "genai_config.json").read_text())["search"]
    assert (genai["do_sample"], genai["temperature"], genai["top_k"]) == (True, 0.6, 20)
    generation["eos_token_id"] = "</s>"
    (tmp_path / "hf" / "generation_config.json").write_text(json.dumps(generation))
    with pytest.warns(edgegen.ImportedSettingWarning), \
            pytest.raises(CheckpointError, match="generation_config.json: expected eos_token_id to be an id or a list "
                                                 "of ids, found '</s>'"):
        export_transformers(None, tmp_path / "hf", tmp_path / "bad")


def test_greedy_and_sample_choose_and_neither_takes_the_packages_default():
    from edgegen.families.gpt.cli import _do_sample

    for given, expected in (({}, None), ({"greedy": True}, False), ({"sample": True}, True),
                            ({"greedy": False}, True), ({"sample": False}, False),   # a served request's false
                            ({"greedy": True, "sample": False}, False)):
        assert _do_sample(dict(given), "greedy", "sample") == expected, given
    for given, found in (({"greedy": True, "sample": True}, "both true"), ({"greedy": False, "sample": False}, "both false")):
        with pytest.raises(ConfigError, match=f"greedy and sample: expected one of them, found {found}"):
            _do_sample(given, "greedy", "sample")


def test_a_generation_config_value_the_sampler_refuses_is_named_and_left_at_transformers_default(tmp_path):
    model = _tiny_llama(tmp_path / "hf")
    generation = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    generation.update(top_p=0.0, temperature=0.0, min_p=0.05)   # greedy: transformers only warns about them
    (tmp_path / "hf" / "generation_config.json").write_text(json.dumps(generation))
    with pytest.warns(edgegen.ImportedSettingWarning) as warned:
        package = export_transformers(None, tmp_path / "hf", tmp_path / "pkg")
    messages = sorted(str(w.message).split(": ", 1)[1] for w in warned)
    assert messages == ["min_p 0.05: transformers' generate applies these by default; edgegen has no such settings and "
                        "does not apply them",
                        "temperature 0.0: expected a value sampling takes, found one only greedy decoding can take, "
                        "since it ignores it (as transformers does, with a warning); the package takes transformers' "
                        "default 1.0, which sampling takes too",
                        "top_p: expected a number above 0 and at most 1 (the kept probability mass), found 0; the package takes "
                        "transformers' default 1.0"]
    pipe = edgegen.load(package)
    # temperature 0 was the default, and --sample was refused naming a --temperature never given
    assert pipe.generation_defaults["temperature"] == 1.0 and pipe.generation_defaults["do_sample"] is False
    assert len(pipe.generate([1, 17], max_new_tokens=4, do_sample=True, seed=0)) == 4
    prompt = [1, 17, 300, 45]
    assert pipe.generate(prompt, max_new_tokens=8) == model.generate(torch.tensor([prompt]), max_new_tokens=8,
                                                                     do_sample=False)[0, 4:].tolist()[:8]
    # beam search, contrastive search, stop strings, a length limit: transformers' generate runs them, edgegen does not
    generation = {"eos_token_id": 2, "num_beams": 4, "penalty_alpha": 0.6, "top_k": 4, "stop_strings": ["\n"],
                  "max_new_tokens": 5, "max_length": 20}
    (tmp_path / "hf" / "generation_config.json").write_text(json.dumps(generation))
    with pytest.warns(edgegen.ImportedSettingWarning) as warned:
        export_transformers(None, tmp_path / "hf", tmp_path / "beams")
    assert [str(w.message).split(": ", 1)[1] for w in warned] == [
        "num_beams 4, penalty_alpha 0.6: transformers' generate applies these by default; edgegen has no such settings "
        "and does not apply them",
        "stop_strings ['\\n'], max_new_tokens 5: transformers' generate applies these by default; edgegen's generate "
        "takes max_new_tokens and stop per call, not from the checkpoint"]


def test_an_imported_setting_is_said_once_at_export_and_transformers_bars_stay_out(tmp_path, capsys):
    """The import's warnings describe the folder's settings: said by the export, not again by every
    command that imports the folder again for PyTorch's side (bench --vs-torch, optimize). The
    import's check loads transformers' model without its own progress bar."""
    _tiny_llama(tmp_path / "hf", "mistral", sliding_window=64)
    capsys.readouterr()
    main(["export", "--from-transformers", str(tmp_path / "hf"), "--out", str(tmp_path / "pkg")])
    said = capsys.readouterr().err
    assert said.count("sliding_window 64 caps the package's context") == 1 and "Loading weights" not in said
    main(["bench", str(tmp_path / "pkg"), "--vs-torch", str(tmp_path / "hf"), "--iters", "10", "--warmup", "10"])
    said = capsys.readouterr()
    assert "| torch eager |" in said.out
    assert "sliding_window" not in said.err and "Loading weights" not in said.err


def test_sliding_windows_are_taken_as_transformers_slides(tmp_path):
    """Mistral slides wherever sliding_window is set (its model never reads use_sliding_window), Qwen2
    only where use_sliding_window says so, in the layers from max_window_layers on; a window shorter than the import's 24-token check is
    checked over the window."""
    for name, model_type, overrides, context in (
            ("mistral-told-not-to", "mistral", {"sliding_window": 32, "use_sliding_window": False}, 32),
            ("mistral-8", "mistral", {"sliding_window": 8}, 8),
            ("qwen2-off", "qwen2", {"sliding_window": 8, "use_sliding_window": False}, 256),
            ("qwen2-8", "qwen2", {"sliding_window": 8, "use_sliding_window": True, "max_window_layers": 0}, 8),
            # its 2 layers below max_window_layers' default 28: none slides (the context was capped at 8)
            ("qwen2-no-layer-slides", "qwen2", {"sliding_window": 8, "use_sliding_window": True}, 256)):
        model = _tiny_llama(tmp_path / name / "hf", model_type, **overrides)
        with warnings.catch_warnings(record=True) as warned:   # a window that caps the context is said at import
            warnings.simplefilter("always", edgegen.ImportedSettingWarning)
            package = export_transformers(model_type, tmp_path / name / "hf", tmp_path / name / "pkg")
        capped = [str(w.message) for w in warned if "caps the package's context" in str(w.message)]
        assert capped == ([] if context == 256 else [f"{tmp_path / name / 'hf' / 'config.json'}: sliding_window {context} "
                                                     f"caps the package's context at {context} tokens, below "
                                                     "max_position_embeddings 256: edgegen attends to every token, so "
                                                     "no sequence may pass the window"]), name
        pipe = edgegen.load(package)
        assert pipe.config.block_size == context, name
        prompt = [1, 17, 300, 45, 9]
        new = min(20, context - len(prompt))
        theirs = model.generate(torch.tensor([prompt]), max_new_tokens=new, do_sample=False)   # stops at its end id
        assert pipe.generate(prompt, max_new_tokens=new, do_sample=False) == theirs[0, len(prompt):].tolist(), name
    from edgegen.families.gpt.hf_import import _sliding_window

    older = {"sliding_window": 8, "use_sliding_window": True, "num_hidden_layers": 4}   # saved without layer_types
    assert _sliding_window(older, "qwen2") is None and _sliding_window({**older, "max_window_layers": 3}, "qwen2") == 8


def test_llama_import_refuses_what_its_decoder_does_not_compute(tmp_path):
    from edgegen.export import model_type as architecture_of

    _tiny_llama(tmp_path / "hf", hidden_act="gelu")
    with pytest.raises(CheckpointError, match="hidden_act 'gelu' \\(expected 'silu'\\)"):
        export_transformers("llama", tmp_path / "hf", tmp_path / "pkg")
    with pytest.raises(CheckpointError, match="expected model_type 'qwen2', found 'llama'"):
        export_transformers("qwen2", tmp_path / "hf", tmp_path / "pkg")
    assert main(["export", "phi3", "--from-transformers", str(tmp_path / "hf"), "--out", str(tmp_path / "pkg")]) == 2
    assert not (tmp_path / "pkg").exists()
    with pytest.raises(CheckpointError, match=r"architecture 'lama': expected one of gpt2, llama.*found 'lama' "
                                              r"\(did you mean 'llama'\?\)"):
        export_transformers("lama", tmp_path / "hf", tmp_path / "pkg")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    # a pad token added to the tokenizer but not to the model: transformers cannot build it either (it was
    # its AssertionError's traceback); and a config without model_type, which naming the architecture cannot mend
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "hidden_act": "silu",
                                                             "pad_token_id": config["vocab_size"]}))
    with pytest.raises(CheckpointError, match=rf"expected pad_token_id below vocab_size {config['vocab_size']}, found "
                                              rf"{config['vocab_size']} \(a pad token added to the tokenizer, and not to "
                                              r"the model: model.resize_token_embeddings"):
        export_transformers("llama", tmp_path / "hf", tmp_path / "pkg")
    # a bias, named by its key; a quantized checkpoint, as such (its load asked for optimum to be installed)
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "hidden_act": "silu", "mlp_bias": True}))
    with pytest.raises(CheckpointError, match=r"found mlp_bias true \(biases on the attention's projections or the MLP"):
        export_transformers("llama", tmp_path / "hf", tmp_path / "pkg")
    (tmp_path / "hf" / "config.json").write_text(json.dumps(
        {**config, "hidden_act": "silu", "quantization_config": {"quant_method": "gptq", "bits": 4}}))
    with pytest.raises(CheckpointError, match=r"found quantization_config \('gptq': quantized weights are not imported; "
                                              r"import the float checkpoint and quantize it with edgegen optimize"):
        export_transformers("llama", tmp_path / "hf", tmp_path / "pkg")
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "hidden_act": "silu"}))
    with pytest.MonkeyPatch.context() as patch:   # whatever else transformers cannot load: one line, not its traceback
        patch.setattr("transformers.AutoModelForCausalLM.from_pretrained",
                      lambda *args, **kwargs: (_ for _ in ()).throw(AssertionError("Padding_idx must be within\nmore")))
        with pytest.raises(CheckpointError, match=r"expected a checkpoint transformers loads, to check the import against, "
                                                  r"found it failing: AssertionError: Padding_idx must be within$"):
            export_transformers("llama", tmp_path / "hf", tmp_path / "pkg")
    (tmp_path / "hf" / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "model_type"}))
    assert main(["export", "--from-transformers", str(tmp_path / "hf"), "--out", str(tmp_path / "pkg")]) == 2
    with pytest.raises(CheckpointError, match=r"expected a model_type naming the architecture, found None \(transformers "
                                              r'needs it too: add "model_type": "llama"'):
        architecture_of(tmp_path / "hf")
    # a sharded save with a shard missing (a download cut short): the index and the shard are named
    _tiny_llama(tmp_path / "hf").save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    shards = sorted((tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 1
    shards[-1].unlink()
    with pytest.raises(CheckpointError, match=rf"model.safetensors.index.json: expected the shards its weight_map names, "
                                              rf"found {shards[-1].name} missing from"):
        export_transformers("llama", tmp_path / "sharded", tmp_path / "pkg")
    # a config.json that disagrees with the weights: the tensors missing are named, not only torch's header
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "hidden_act": "silu", "num_hidden_layers": 3}))
    with pytest.raises(CheckpointError, match=r"expected the tensors config.json describes, found tensors 9 missing "
                                              r"\(layers\.2\.input_layernorm\.weight, layers\.2\.self_attn\.q_proj\.weight, "
                                              r"layers\.2\.self_attn\.k_proj\.weight, \.\.\.\)$"):
        export_transformers("llama", tmp_path / "hf", tmp_path / "pkg")
    # sizes that disagree are said with both shapes, in one clause, not torch's sentence per tensor
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "hidden_act": "silu", "intermediate_size": 100}))
    with pytest.raises(CheckpointError, match=r"found tensors 6 of another shape \(layers\.0\.mlp\.gate_proj\.weight "
                                              r"\[96, 64\] against the model's \[100, 64\], "):
        export_transformers("llama", tmp_path / "hf", tmp_path / "pkg")


def test_bench_runs_the_transformers_folder_an_import_came_from_beside_the_package(tmp_path, capsys):
    """bench --vs-torch takes the save_pretrained folder: imported again (weights checked), its KV-cache
    loop in PyTorch timed beside the runtime's."""
    _tiny_llama(tmp_path / "hf", num_key_value_heads=2)
    package = export_transformers("llama", tmp_path / "hf", tmp_path / "pkg")
    assert main(["bench", str(package), "--iters", "10", "--warmup", "0", "--no-energy", "--vs-torch",
                 str(tmp_path / "hf"), "--json", str(tmp_path / "b.json")]) == 0
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["speedup_vs_torch_p50"]["generate"] > 0 and "| generate | torch eager |" in capsys.readouterr().out


def test_bench_vs_torch_times_torch_for_the_steps_a_generation_that_ended_early_took(tmp_path, capsys, monkeypatch):
    """A model that emits its end token after 5 tokens: torch's loop, which never stops, ran all 128
    steps, and the table put edgegen's 5-token call beside it (13x where the fair ratio was 5x)."""
    import edgegen.bench as bench
    from edgegen.families.gpt.pipeline import GPTPipeline

    _tiny_llama(tmp_path / "hf")
    package = export_transformers("llama", tmp_path / "hf", tmp_path / "pkg")
    generate = GPTPipeline.generate
    monkeypatch.setattr(GPTPipeline, "generate", lambda self, *a, **k: [row[:5] for row in generate(self, *a, **k)])
    steps = []
    timed = bench.torch_generation
    monkeypatch.setattr(bench, "torch_generation", lambda c, p, prompts, new, t: steps.append(new) or timed(c, p, prompts, new, t))
    assert main(["bench", str(package), "--iters", "10", "--warmup", "0", "--no-energy", "--vs-torch",
                 str(tmp_path / "hf")]) == 0
    assert steps == [5] and "128 new tokens (5 made in all: the model emitted its end token)" in capsys.readouterr().out


def test_bench_times_a_short_context_model_on_a_generation_that_fits_it(tmp_path, capsys):
    """The reference generation (32 + 128 tokens) does not fit a 64-token context, as an imported
    Mistral's sliding window or a small model's block: it is split as it is, about 1 to 4. The
    graph settings a token package is not timed by are refused, not ignored."""
    from edgegen.bench import reference_lengths

    assert reference_lengths(160) == reference_lengths(2048) == (32, 128)
    assert reference_lengths(64) == (12, 52) and reference_lengths(3) == (1, 2)
    with pytest.raises(ConfigError, match="expected a model whose context holds a prompt and two new tokens, found a "
                                          "context of 2"):
        reference_lengths(2)
    _tiny_llama(tmp_path / "hf", max_position_embeddings=64)
    package = export_transformers("llama", tmp_path / "hf", tmp_path / "pkg")
    assert main(["bench", str(package), "--iters", "10", "--warmup", "0", "--no-energy", "--batch", "2",
                 "--json", str(tmp_path / "b.json")]) == 0
    report = json.loads((tmp_path / "b.json").read_text())["generation"]
    assert (report["prompt_tokens"], report["new_tokens"]) == (12, 52)
    assert report["bound"]["after_tokens"] == 12 + 51 / 2
    assert "12-token prompts, 52 new tokens" in capsys.readouterr().out
    for flags, refusal in ((["--no-generation"], "--no-generation: expected a package whose graphs are timed one "
                            "call at a time, found a gpt package, timed as whole greedy generations"),
                           (["--shapes", "past=8"], "--shapes/--sweep: expected a package whose graphs are timed at "
                            "sizes, found a gpt package"),
                           (["--sweep", "past=8,16"], "--shapes/--sweep: expected")):
        assert main(["bench", str(package), "--iters", "10", "--no-energy", *flags]) == 2
        assert refusal in capsys.readouterr().err


def test_a_124m_llama_imports_and_decodes_as_transformers(tmp_path):
    """The size people start from on a device: 12 layers x 768, 12 heads over 4 key/value heads,
    SwiGLU 2048, vocab 32000, untied output (about 125M parameters)."""
    model = _tiny_llama(tmp_path / "hf", vocab_size=32000, hidden_size=768, intermediate_size=2048,
                        num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                        max_position_embeddings=512, initializer_range=0.02)
    assert 120e6 < sum(p.numel() for p in model.parameters()) < 130e6
    assert main(["export", "llama", "--from-transformers", str(tmp_path / "hf"), "--out", str(tmp_path / "pkg")]) == 0
    pipe = edgegen.load(tmp_path / "pkg", backend="ort-cpu")
    prompt = [1, *range(100, 130)]
    theirs = model.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False, pad_token_id=0)
    assert pipe.generate(prompt, max_new_tokens=16, do_sample=False) == _until_eos(theirs[0, len(prompt):].tolist(), 2)


def test_onnxruntime_genai_runs_an_imported_grouped_query_llama(tmp_path):
    pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is in the dev extra (Linux x86-64)")
    _tiny_llama(tmp_path / "hf", "qwen2", num_key_value_heads=2)
    assert main(["export", "qwen2", "--from-transformers", str(tmp_path / "hf"), "--out", str(tmp_path / "pkg")]) == 0
    pipe, lengths = edgegen.load(tmp_path / "pkg"), []
    for prompt in ([1, 17, 300, 45, 9, 255], [1, 5], [1, 200, 201]):
        ours = pipe.generate(prompt, max_new_tokens=30, do_sample=False)
        assert _genai_greedy(tmp_path / "pkg", prompt, 30)[:len(ours)] == ours
        lengths.append(len(ours))
    assert max(lengths) >= 10, lengths


def test_llama_graphs_for_each_tensorrt_target_parse_by_their_tensorrt_tables(tmp_path, caplog):
    """export --target checks the graph after writing it (exit 1 if TensorRT's parser table refuses
    it). ONNX's Attention, RotaryEmbedding and RMSNormalization exist from opset 23, and TensorRT
    parses them from 10.15: the desktop target's graph has them, one node each; JetPack 6's
    TensorRT 10.3 reads opset 18 and JetPack 7.0's 10.13 opset 21, where they are decomposed
    (MatMul and Softmax; Mul, Add and Concat)."""
    _tiny_llama(tmp_path / "hf", num_key_value_heads=2)
    ops = {}
    for target in ("jetpack6", "jetpack7", "tensorrt"):
        assert main(["export", "llama", "--from-transformers", str(tmp_path / "hf"), "--out", str(tmp_path / target),
                     "--target", target]) == 0
        graph = onnx.load(str(tmp_path / target / "decoder.onnx"))
        ops[target] = ({o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")}, {n.op_type for n in graph.graph.node})
    fused = {"Attention", "RotaryEmbedding", "RMSNormalization"}
    assert ops["jetpack6"][0] == {18} and not fused & ops["jetpack6"][1] and "Softmax" in ops["jetpack6"][1]
    assert ops["jetpack7"][0] == {21} and not fused & ops["jetpack7"][1] and "Softmax" in ops["jetpack7"][1]
    assert ops["tensorrt"][0] == {23} and fused <= ops["tensorrt"][1]
    # JetPack 6's package with int4 made for the desktop (opset 21): check and build advised that very
    # command, or exporting again for jetpack6, which it already was (helper 97)
    from edgegen.check import check_package
    from edgegen.optimize import optimize_package
    from edgegen.runtimes.engines import build_package
    from edgegen.targets import get_target

    pkg = tmp_path / "jetpack6"
    caplog.set_level(logging.WARNING)
    assert "file" in optimize_package(pkg, "int4", target="tensorrt", gate_threshold=0.0, max_8bit_share=0,
                                      progress=lambda line: None)["decoder"]
    # the quantizer's warning, each time it quantizes, that it raises opset 18 to 21: edgegen means it (helper 106)
    assert not [r for r in caplog.records if "int4 data type" in r.getMessage()]
    (int4,) = [c for c in check_package(pkg, target="jetpack6", device_parser=False) if c.part == "decoder (int4)"]
    assert int4.opset == 21 and int4.problems == [
        "opset 21: TensorRT 10.3 parses opsets 9 to 20 (the int4 variant was made for tensorrt: int4 has no form "
        "TensorRT 10.3 parses (its blocks need opset 21): build from fp32 (TensorRT fuses by itself), or from a "
        "variant of int8, fp16 made with --target jetpack6)"], int4.problems
    shutil.rmtree(pkg)
    optimize_package(tmp_path / "jetpack7", "int4", gate_threshold=0.0, max_8bit_share=0, speed_check=False,
                     progress=lambda line: None)
    with pytest.raises(BackendError, match=r"int4 variant of graph 'decoder' is ONNX Runtime's MatMulNBits.*"
                                           r"\(edgegen optimize --precision int4 --target jetpack7 writes"):
        build_package(tmp_path / "jetpack7", "int4", target=get_target("jetpack7"))
    # JetPack 7's int4 judged for JetPack 6, which takes no int4: check advised exporting again for
    # jetpack6, after which optimize refuses int4, and build went on to TensorRT's parser (helper 144)
    optimize_package(tmp_path / "jetpack7", "int4", target="jetpack7", gate_threshold=0.0, max_8bit_share=0,
                     speed_check=False, progress=lambda line: None)
    (int4,) = [c for c in check_package(tmp_path / "jetpack7", target="jetpack6", device_parser=False)
               if c.part == "decoder (int4)"]
    assert int4.problems[0].endswith("(the int4 variant was made for jetpack7: int4 has no form TensorRT 10.3 parses "
                                     "(its blocks need opset 21): its graphs are beyond what TensorRT 10.3 reads: export "
                                     "again with --target jetpack6, then build from fp32 (TensorRT fuses by itself), or "
                                     "from a variant of int8, fp16 made with --target jetpack6)"), int4.problems
    with pytest.raises(BackendError, match=r"--precision int4: expected one the target jetpack6 builds \(fp32, int8, "
                                           r"fp16\), found int4 \(int4 has no form TensorRT 10.3 parses"):
        build_package(tmp_path / "jetpack7", "int4", target=get_target("jetpack6"))


def test_optimize_for_jetpack_7_refuses_a_graph_with_attention_before_writing_a_variant(gpt, tmp_path):
    """JetPack 7.0's TensorRT 10.13 reads opset 23 but not its Attention: a variant of such a graph
    was written, then refused by check (helper 96). Refused first, naming the export that fits."""
    from edgegen.optimize import optimize_package

    pkg = shutil.copytree(gpt["pkg"], tmp_path / "pkg")
    with pytest.raises(ConfigError, match=r"target jetpack7: expected graphs TensorRT 10.13 parses .*, found graph "
                                          r"'decoder' with ONNX's Attention, which it does not: export for it first "
                                          r"\(edgegen export ... --target jetpack7, which writes opset 21\), where it "
                                          r"is spelled in plain ops"):
        optimize_package(pkg, "int8", target="jetpack7", progress=lambda line: None)
    assert json.loads((pkg / "edgegen.json").read_text())["variants"] == {}


def test_a_llama_trained_here_generates_as_pytorch_and_its_weight_only_variants_are_gated(tmp_path, capsys):
    """edgegen train gpt --architecture llama: the same training, export and runtime loop."""
    from edgegen.optimize import optimize_package

    assert main(["train", "gpt", "--n-kv-head", "2", "--steps", "1", "--out", str(tmp_path / "gpt2")]) == 2   # a llama's
    assert "n_kv_head expected only with architecture 'llama', found it with 'gpt2'" in \
        capsys.readouterr().err and not (tmp_path / "gpt2").exists()

    assert main(["train", "gpt", "--n-head", "3", "--steps", "1", "--out", str(tmp_path / "gpt2")]) == 2
    assert "n_embd expected a multiple of n_head (3), found 128" in capsys.readouterr().err

    assert main(["train", "gpt", "--architecture", "llama", "--n-kv-head", "2", "--steps", "40", "--batch-size", "16",
                 "--n-layer", "2", "--n-embd", "64", "--block-size", "128", "--train-context", "64",
                 "--out", str(tmp_path / "ckpt")]) == 0
    ckpt = load_checkpoint(tmp_path / "ckpt")
    assert ckpt.config.architecture == "llama" and ckpt.model.config.kv_heads == 2
    c = ckpt.config
    assert (c.n_layer, c.n_head, c.n_embd, c.block_size, c.train_context) == (2, 4, 64, 128, 64)   # the size options
    assert main(["export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "pkg")]) == 0
    prompt = list(b"def __init__(self")
    assert edgegen.load(tmp_path / "pkg").generate(prompt, max_new_tokens=40, do_sample=False) == \
        ckpt.model.greedy(prompt, 40)
    for precision in ("int8-weights", "int4"):
        gate = optimize_package(tmp_path / "pkg", precision, target="tensorrt" if precision == "int4" else "ort-cpu",
                                progress=lambda line: None)["decoder"]["gate"]
        assert gate["perplexity_ratio"] > 0 and 0 <= gate["value"] <= 1   # recorded, whichever way it went
