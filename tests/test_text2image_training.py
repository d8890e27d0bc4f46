"""The text2image model edgegen trains (captioned digits, or a folder of captioned pictures) and
its export through the diffusers import path (docs/diffusers.md)."""

import json
import re
import warnings

import numpy as np
import pytest
import torch

import edgegen
from edgegen.errors import DataError
from edgegen.export import export_checkpoint
from edgegen.families.text2image.components import clip_vocabulary
from edgegen.families.text2image.model import ATTRIBUTES, CAPTION_WORDS, DIGIT_NAMES, caption, ink, prepare_data
from edgegen.training.checkpoint import load_checkpoint
from edgegen.training.train import train

TINY = {"unet_channels": [8, 16], "vae_channels": [8, 8], "norm_groups": 4, "cross_dim": 16, "text_intermediate": 16,
        "attention_head_dim": 4}


def digit_ids(text: str, max_length: int) -> list[int]:
    """A digit caption's ids looked up word by word in the caption vocabulary (each word one token):
    start, the words, end, then end tokens as padding."""
    vocab, _ = clip_vocabulary(CAPTION_WORDS)
    start, end = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    return ([start] + [vocab[w + "</w>"] for w in text.split()] + [end] * max_length)[:max_length]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text2image")
    ckpt = train("text2image", folder / "ckpt", steps=4, batch_size=8, progress=False, **TINY)
    return ckpt, export_checkpoint(ckpt, folder / "pkg")


def test_captions_name_the_digit_and_the_attribute():
    assert caption(7, "thick") == "a thick seven"
    assert caption(8) == "an eight"
    assert caption(8, "thin") == "a thin eight"
    assert len({caption(d, a) for d in range(10) for a in (None, *ATTRIBUTES)}) == 30


def test_thick_and_thin_split_each_digit_at_its_median_ink():
    images, from_data = prepare_data("digits", 16, None, 0)
    medians = np.asarray(from_data["ink_medians"])
    amount = ink(images.train)
    for digit in range(10):
        above = np.mean(amount[images.train_labels == digit] > medians[digit])
        assert 0.45 <= above <= 0.55, (digit, above)


def test_each_image_is_captioned_by_its_label_and_ink(exported):
    """The sevens nearest their median ink on either side, as the trainer sees them (in [-1, 1]):
    thin below, thick above; the dropped label is the empty prompt."""
    model = load_checkpoint(exported[0]).model
    images, _ = prepare_data("digits", 16, None, 0)
    sevens = images.train[images.train_labels == 7]
    distance = ink(sevens) - model.config.ink_medians[7]
    below, above = sevens[distance < 0][np.argmax(distance[distance < 0])], sevens[distance > 0][np.argmin(distance[distance > 0])]
    trained_range = torch.from_numpy(np.stack([below, above, above])) * 2 - 1
    length = model.config.max_length
    labels = torch.tensor([7, 7, 10])   # 10: the dropped label, the empty prompt
    ids = model.caption_ids(labels, trained_range, attribute_dropout=0.0)
    assert ids.tolist() == [digit_ids("a thin seven", length), digit_ids("a thick seven", length), digit_ids("", length)]
    # against the seven's median, not another digit's: an eight's median is higher than both
    assert model.config.ink_medians[8] > ink(above[None])[0]
    dropped = model.caption_ids(labels[:2], trained_range[:2], attribute_dropout=1.0 - 1e-9)
    assert dropped.tolist() == [digit_ids("a seven", length)] * 2


def test_the_runtime_tokenizer_gives_the_ids_the_model_was_trained_on(exported):
    pipe = edgegen.load(exported[1])
    texts = [caption(d, a) for d in range(10) for a in (None, *ATTRIBUTES)] + [""]
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # every caption fits: nothing is said
        ids = pipe.tokenizer.encode_padded(texts, pipe.config.max_length, pipe.config.pad_token_id)
    assert ids.tolist() == [digit_ids(t, pipe.config.max_length) for t in texts]


def test_a_prompt_past_the_text_encoders_length_is_cut_with_a_warning_naming_the_words_cut(exported):
    """As diffusers cuts and says it: the image follows the prompt's start only, which the user is told
    (two prompts gave the same image without a word). Once per prompt: a cached prompt is not encoded again."""
    pipe = edgegen.load(exported[1])
    long = "a thick seven and a thin two and a zero next to it"
    with pytest.warns(edgegen.EdgegenWarning, match=r"^prompt: the text encoder takes 8 tokens, its start and end of text "
                                                    r"among them; the rest was cut: 'a thin two and a zero next to it'$"):
        cut = pipe.encode_prompt(long)
    np.testing.assert_array_equal(cut, pipe.encode_prompt("a thick seven and"))   # what was kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.encode_prompt(long)
    # each named as the caller gave it: its place among the prompts, the negative prompt as such
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        pipe.prompts(["a seven", "a seven", "a thin two and a zero and a thick seven"],
                     "a thick one and a thin four and a zero", n=1, guidance_scale=3.0)
    assert [str(w.message).split(":")[0] for w in said if "the rest was cut" in str(w.message)] == ["prompt[2]",
                                                                                                 "negative_prompt"]
    # a service's distinct long prompts: each said, none kept in the caller's warning registry (it
    # grew by one entry per prompt, without bound)
    registry = globals().setdefault("__warningregistry__", {})
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("default")
        for i in range(3):
            pipe.encode_prompt(f"a thick seven and a thin two number {i} and a zero")
    assert len([w for w in said if "the rest was cut" in str(w.message)]) == 3 and not [key for key in registry if isinstance(key, tuple) and "number" in str(key[0])]
    # a prompt of a million characters: the warning quotes the cut part's start, not all of it (helper 151)
    with pytest.warns(edgegen.EdgegenWarning, match=r"the rest was cut: 'a thin two and (a zero )+a z' and 999,813 "
                                                    r"characters more$") as said:
        pipe.encode_prompt("a thick seven and a thin two and " + "a zero " * 142_857)
    assert len(str(said[0].message)) < 400


def test_many_prompts_keep_to_the_calls_caps_and_the_cache_to_its_prompts(exported, monkeypatch):
    """A service's list of prompts: the call's images (prompts x n) are held to the cap of a call,
    where 60,000 of 2 prompts ran a UNet call of 120,000 rows; the text encoder runs ROWS_PER_CALL
    rows a call, where 1,000 new prompts were one call; the cache's 64 prompts each hold their own
    states, where they were views that kept a whole call's array alive."""
    from edgegen.errors import InputError
    from edgegen.families.text2image.pipeline import PROMPT_CACHE_SIZE
    from edgegen.runtimes.pipeline import MAX_COUNT

    pipe = edgegen.load(exported[1])
    with pytest.raises(InputError, match=rf"^prompts x n: expected at most {MAX_COUNT} per call \(call in batches\), "
                                         rf"found 120000$"):
        pipe(["a seven", "a two"], n=60000, steps=1, guidance_scale=1.0)
    encoder = pipe.sessions["text_encoder"]
    calls, run = [], encoder.run
    monkeypatch.setattr(encoder, "run", lambda feeds: calls.append(len(feeds["input_ids"])) or run(feeds))
    texts = [f"a seven {i}" for i in range(300)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # cut prompts, said on purpose
        states = pipe.encode_prompt(texts)
    assert calls == [encoder.max_rows, 300 - encoder.max_rows] and len(states) == 300
    assert len(pipe._encoded) == PROMPT_CACHE_SIZE and all(row.base is None for row in pipe._encoded.values())


def test_a_cut_inside_a_word_names_the_word_and_warns_from_python_c(exported):
    """A word the tokenizer splits in several tokens may be cut inside: the warning named a piece
    of it ('t seven'). And the warning, pointed at the caller's line, was an ImportError from
    `python -c`, stdin or the REPL (warnings asked __main__'s builtin loader for its source), which
    ended the call."""
    import subprocess
    import sys

    code = ("import warnings, edgegen; warnings.simplefilter('always'); "
            f"pipe = edgegen.load({str(exported[1])!r}); pipe.encode_prompt('a thick digit seven'); print('encoded')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout == "encoded\n", run.stderr
    assert "the rest was cut: 'digit seven', of which 'digi' was kept" in run.stderr
    assert "<string>:1: EdgegenWarning" in run.stderr   # the caller's line


@pytest.mark.parametrize("pad, message", [
    (-1, r"pad_token_id expected a token id \(0 or more\), found -1"),   # the tokenizers library's OverflowError
    (99999, r"pad_token_id expected an id of its tokenizer \(below \d+\), found 99999"),   # ONNX Runtime's Gather
])
def test_a_pad_token_the_tokenizer_lacks_is_refused_at_load(exported, tmp_path, pad, message):
    import shutil

    from edgegen.errors import ManifestError

    copy = shutil.copytree(exported[1], tmp_path / "pkg")
    manifest = json.loads((copy / "edgegen.json").read_text())
    manifest["config"]["pad_token_id"] = pad
    (copy / "edgegen.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=message):
        edgegen.load(copy)


def test_the_export_goes_through_the_diffusers_import_and_names_the_checkpoint(exported):
    ckpt, pkg = exported
    manifest = json.loads((pkg / "edgegen.json").read_text())
    source = manifest["provenance"]["source_checkpoint"]
    assert source["path"] == str(ckpt.resolve())
    assert source["weights_sha256"] == load_checkpoint(ckpt).weights_sha256
    assert manifest["name"] == "ckpt"
    assert set(manifest["graphs"]) == {"text_encoder", "unet", "decoder", "encoder"}
    assert all(g["validation"]["passed"] for g in manifest["graphs"].values())
    config = manifest["config"]
    assert config["sampler"] == "dpmpp-2m"
    assert config["data"]["source"] == "digits"
    assert config["data"]["captions"]["digits"] == list(DIGIT_NAMES)
    assert config["data"]["captions"]["ink_medians"] == load_checkpoint(ckpt).config.ink_medians
    assert (pkg / "tokenizer.json").is_file()
    # the fields added for a folder's captions, left out while unset: an earlier edgegen refused them as unknown keys
    saved = json.loads((ckpt / "config.json").read_text())["config"]
    assert "captions" not in saved and "caption_words" not in saved and "ink_medians" in saved


def test_bench_runs_the_checkpoint_beside_the_package(exported):
    from edgegen.bench import bench_package

    ckpt, pkg = exported
    report = bench_package(pkg, batch=2, iters=2, warmup=1, vs_torch=ckpt)
    assert set(report["speedup_vs_torch_p50"]) == {"text_encoder", "unet", "decoder", "encoder"}


def test_the_eager_modules_reproduce_the_package(exported):
    """What bench --vs-torch and optimize draw from the checkpoint is what the package holds."""
    from edgegen.bench import eager_modules

    ckpt, pkg = exported
    pipe = edgegen.load(pkg)
    modules = eager_modules(ckpt, pipe)
    latent = np.random.default_rng(0).standard_normal((2, *pipe.config.latent_shape)).astype(np.float32)
    with torch.inference_mode():
        eager = modules["decoder"](torch.from_numpy(latent)).numpy()
    np.testing.assert_allclose(pipe.sessions["decoder"].run({"latent": latent})["image"], eager, atol=1e-5)
    ids = pipe.tokenizer.encode_padded(["a thick seven", "an eight"], pipe.config.max_length, pipe.config.pad_token_id)
    states = pipe.sessions["text_encoder"].run({"input_ids": ids})["last_hidden_state"]
    t = np.array([999.0, 10.0], np.float32)
    with torch.inference_mode():
        np.testing.assert_allclose(states, modules["text_encoder"](torch.from_numpy(ids)).numpy(), rtol=1e-4, atol=1e-5)
        eager_unet = modules["unet"](*(torch.from_numpy(a) for a in (latent, t, states))).numpy()
    ours = pipe.sessions["unet"].run({"sample": latent, "timestep": t, "encoder_hidden_states": states})["prediction"]
    np.testing.assert_allclose(ours, eager_unet, rtol=1e-4, atol=1e-4)


# -- a folder of one's own captioned pictures -----------------------------------------------------

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220)}


def colour_pictures(folder, per_colour: int = 4, size: int = 40):
    """Pictures of one colour each, named by it: (folder, {file name: its colour})."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    colours = {}
    for i in range(per_colour * len(COLOURS)):
        colour = list(COLOURS)[i % len(COLOURS)]
        Image.new("RGB", (size, size), COLOURS[colour]).save(folder / f"p{i:02d}.png")
        colours[f"p{i:02d}.png"] = colour
    return folder, colours


def write_metadata(folder, rows, name="metadata.jsonl"):
    if name.endswith(".csv"):
        lines = ["file_name,caption"] + [f"{f},{t}" for f, t in rows]
        (folder / name).write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")   # a spreadsheet's BOM
    else:
        (folder / name).write_text("".join(json.dumps({"file_name": f, "text": t}) + "\n" for f, t in rows))


def test_the_caption_vocabulary_spells_every_word_as_one_token():
    """Each word's merges join the pieces earlier words' merges leave it in: "green" after "red"
    came out g, re, e, n (the "r e" merge of "red" fired first), four tokens for one word."""
    from edgegen.families.text2image.components import caption_words, vocabulary_tokenizer

    words = caption_words(["A red car, 2 doors.", "a GREEN café", "the car's greenery", "red red red",
                           "papaya cocoa couscous"])   # a pair again later in the word: merged wherever it occurs
    assert words[:2] == ["red", "a"] and {"green", "café", ",", "2", "'s", "greenery", "papaya"} <= set(words)
    tokenizer = vocabulary_tokenizer(tuple(words), 77)
    assert [len(tokenizer(w)["input_ids"]) for w in words] == [3] * len(words)   # start, the word, end
    assert vocabulary_tokenizer(CAPTION_WORDS, 77)("a thick seven")["input_ids"] == digit_ids("a thick seven", 5)


@pytest.mark.parametrize("form", ["metadata.jsonl", "metadata.csv", ".txt", ".caption"])
def test_a_folders_captions_are_read_from_its_metadata_or_the_text_beside_each_picture(tmp_path, form):
    from edgegen.training.captions import folder_captions
    from edgegen.training.data import image_files

    folder, colours = colour_pictures(tmp_path / "pictures", per_colour=1)
    if form.startswith("metadata"):
        write_metadata(folder, [(name, f"a {c} square") for name, c in reversed(colours.items())], form)
    else:
        for name, colour in colours.items():
            (folder / name).with_suffix(form).write_text(f"a {colour} square\n")
    pictures = image_files(folder, "data folder")
    captions, said = folder_captions(folder, pictures)
    assert captions == [f"a {colours[p.name]} square" for p in pictures]
    assert said == (form if form.startswith("metadata") else "text files beside the pictures")


@pytest.mark.filterwarnings("ignore:.*the text files beside")   # said while the metadata has typos; tested at the end
def test_a_folders_captions_that_do_not_match_its_pictures_are_refused_naming_them(tmp_path):
    from edgegen.training.captions import folder_captions
    from edgegen.training.data import image_files

    folder, colours = colour_pictures(tmp_path / "pictures", per_colour=2)
    pictures = image_files(folder, "data folder")
    with pytest.raises(DataError, match=r"expected captions for text2image, a metadata.jsonl or metadata.csv .*found none"):
        folder_captions(folder, pictures)
    (folder / "p00.txt").write_text("a red square")
    with pytest.raises(DataError, match=r"expected a caption for every picture \(a text file beside it .*found 5 of its "
                                        r"6 pictures without one: 'p01.png', 'p02.png', 'p03.png' and 2 more$"):
        folder_captions(folder, pictures)
    write_metadata(folder, [("p00.png", "a red square"), ("p0.png", "typo"), ("p01.png", "a green square")])
    with pytest.raises(DataError, match=r"metadata.jsonl': expected its file_names to name pictures in .*found 1 that do "
                                        r"not: 'p0.png'$"):
        folder_captions(folder, pictures)
    write_metadata(folder, [("p00.png", "a red square"), ("p00.png", "again")])
    with pytest.raises(DataError, match=r"metadata.jsonl' line 2: expected each picture once, found 'p00.png' again"):
        folder_captions(folder, pictures)
    (folder / "metadata.jsonl").write_text('{"file_name": "p00.png", "text": "a"}\n{"file_name": "p01.png", "label": 1}\n')
    with pytest.raises(DataError, match=r"line 2: expected one caption column \('text' or 'caption'\), found the columns "
                                        r"\['file_name', 'label'\]"):
        folder_captions(folder, pictures)
    (folder / "metadata.jsonl").write_text('{"file_name": "p00.png", "text": "a"}\nnot json\n')
    with pytest.raises(DataError, match=r"line 2: expected one JSON object per line, found 'not json'"):
        folder_captions(folder, pictures)
    write_metadata(folder, [(name, f"a {c} square") for name, c in colours.items()])
    with pytest.warns(edgegen.EdgegenWarning, match=r"captions read from metadata.jsonl; the text files beside 1 of its "
                                                    r"pictures are not read"):
        assert folder_captions(folder, pictures)[0][0] == "a red square"
    write_metadata(folder, [(name, f"a {c} square") for name, c in colours.items()], "metadata.csv")
    with pytest.raises(DataError, match=r"expected one metadata file, found 2 \(metadata.jsonl, metadata.csv\)"):
        folder_captions(folder, pictures)
    (folder / "metadata.jsonl").unlink()
    (folder / ".hidden.png").write_bytes((folder / "p00.png").read_bytes())
    (folder / "metadata.csv").write_text("file_name,text\np00.png,a\n.hidden.png,b\nnotes.txt,c\n")
    (folder / "notes.txt").write_text("")
    with pytest.raises(DataError, match=r"expected its file_names to name pictures training reads, found 2 files it does "
                                        r"not \(hidden, outside the folder, or not of .*\): '.hidden.png', 'notes.txt'$"):
        folder_captions(folder, pictures)   # they were taken, their rows dropped
    (folder / "metadata.csv").write_text("filename,text\np00.png,a\n")
    with pytest.raises(DataError, match=r"line 2: expected a file_name .*found the columns \['filename', 'text'\]"):
        folder_captions(folder, pictures)
    (folder / "metadata.csv").write_text("file_name,text\np00.png,a red car, shiny\n")   # its rest was dropped (review 159)
    with pytest.raises(DataError, match=r"line 2: expected 2 fields \(file_name, text\), found 3: quote a caption that "
                                        r"holds commas"):
        folder_captions(folder, pictures)
    (folder / "metadata.csv").write_text(f"file_name,text\n{(folder / 'p00.png').resolve()},a red square\n")
    roundabout = folder / ".." / folder.name   # --data cap/../cap, a file_name given whole: the same pictures
    with pytest.raises(DataError, match=r"found 5 of its 6 pictures without one: 'p01.png'"):   # p00.png is taken
        folder_captions(roundabout, image_files(roundabout, "data folder"))
    (folder / "metadata.csv").write_text("file_name,text,caption\np00.png,,a red square\n")
    with pytest.raises(DataError, match=r"line 2: expected one caption column \('text' or 'caption'\), found the columns "
                                        r"\['caption', 'file_name', 'text'\]"):   # it read the empty one
        folder_captions(folder, pictures)


def test_a_caption_with_a_line_break_or_a_line_separator_is_read_whole(tmp_path):
    """csv.writer quotes a caption with a line break, which split lines joined ("line oneline two");
    JSON holds U+2028 unescaped, where splitlines() cut the row in two and refused it."""
    import csv

    from edgegen.training.captions import folder_captions
    from edgegen.training.data import image_files

    folder, colours = colour_pictures(tmp_path / "pictures", per_colour=1)
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "text"])
        for i, name in enumerate(colours):
            writer.writerow([name, f"line one\nline two {i}, quoted"])
    captions, _ = folder_captions(folder, image_files(folder, "data folder"))
    assert captions == [f"line one\nline two {i}, quoted" for i in range(3)]
    (folder / "metadata.csv").unlink()
    (folder / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "text": "a\u2028b"}, ensure_ascii=False) + "\n"
                                                   for n in colours), encoding="utf-8")
    assert folder_captions(folder, image_files(folder, "data folder"))[0] == ["a\u2028b"] * 3


def test_captions_are_taken_as_the_text_encoder_reads_them(tmp_path):
    """"A Red  Square" and "a red square" give the same ids: one caption, not two labels; a folder
    whose every caption is empty has nothing to learn words from (its vocabulary was the digits')."""
    folder, colours = colour_pictures(tmp_path / "pictures", per_colour=2)
    write_metadata(folder, [(n, "A Red  Square" if i % 2 else " a red square") for i, n in enumerate(colours)])
    images, from_data = prepare_data(str(folder), 16, None, 0)
    assert from_data["captions"] == ["a red square"] and images.num_classes == 1
    write_metadata(folder, [(n, "") for n in colours])
    with pytest.raises(DataError, match=r"expected captions with words, found every caption empty"):
        prepare_data(str(folder), 16, None, 0)


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    """A tiny model trained on a folder of coloured pictures captioned by colour, and its package."""
    folder = tmp_path_factory.mktemp("captioned")
    pictures, colours = colour_pictures(folder / "pictures")
    write_metadata(pictures, [(name, f"a {colour} picture") for name, colour in colours.items()])
    with pytest.warns(edgegen.EdgegenWarning, match=r"training at 16x16 pixels, the text2image family's default, where "
                                                    r"the folder's pictures are 40 pixels or more"):
        ckpt = train("text2image", folder / "ckpt", data=str(pictures), steps=4, batch_size=8, progress=False, **TINY)
    return ckpt, export_checkpoint(ckpt, folder / "pkg"), colours


def test_a_folders_pictures_train_on_their_own_captions(captioned):
    """Each picture's label is its caption's, through the split; the vocabulary is the captions'
    words; the tokens are as long as the longest caption; and the package's tokenizer gives the
    very ids the model was trained on."""
    ckpt, pkg, colours = captioned
    c = load_checkpoint(ckpt).config
    assert c.captions == ["a red picture", "a green picture", "a blue picture"] and c.num_classes == 3
    assert json.loads((ckpt / "config.json").read_text())["config"]["captions"] == c.captions
    assert sorted(c.caption_words) == ["a", "blue", "green", "picture", "red"] and c.max_length == 5
    assert c.image_channels == 3 and not c.ink_medians
    images, from_data = prepare_data(str(ckpt.parent / "pictures"), 16, None, 0)
    for pictures, labels in ((images.train, images.train_labels), (images.test, images.test_labels)):
        shown = [max(COLOURS, key=lambda k: -np.abs(np.asarray(COLOURS[k]) / 255 - p[:, 0, 0]).sum()) for p in pictures]
        assert [from_data["captions"][label] for label in labels] == [f"a {colour} picture" for colour in shown]
    model = load_checkpoint(ckpt).model
    pipe = edgegen.load(pkg)
    trained = model.caption_ids(torch.tensor([0, 1, 2, 3]), torch.zeros(4, 3, 16, 16), attribute_dropout=0.0)
    ids = pipe.tokenizer.encode_padded([*c.captions, ""], c.max_length, pipe.config.pad_token_id)
    assert ids.tolist() == trained.tolist() and len(set(map(tuple, ids.tolist()))) == 4
    described = pipe.config.data["captions"]
    assert described == {"form": "the captions of the training pictures", "distinct": 3, "vocabulary_words": 5,
                         "examples": c.captions}
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # words it was trained on: nothing said
        assert pipe("a green picture", n=2, steps=2, seed=0).shape == (2, 3, 16, 16)
    # a word its captions did not hold: said, where pictures of nothing asked came without a word
    with pytest.warns(edgegen.EdgegenWarning, match=r"^prompt: 'Purple': a word the model's training captions did not "
                                                    r"hold, spelled in pieces it has seen little of"):
        pipe.encode_prompt("a Purple picture")


def test_a_start_keeps_its_vocabulary_and_says_the_captions_words_it_lacks(exported, captioned, tmp_path):
    """Fine-tuning text2image-digits' kind of model on one's own captions: its text encoder's
    embeddings are made for the digit words and 8 tokens, which it keeps; the words it lacks are
    said, and a caption past its tokens is said cut."""
    ckpt, _, _ = captioned
    folder = ckpt.parent / "pictures"
    with pytest.warns(edgegen.EdgegenWarning) as said:
        tuned = train("text2image", tmp_path / "tuned", data=str(folder), init=exported[0], steps=2, batch_size=4,
                      progress=False)
    messages = [str(w.message) for w in said]
    assert any(re.search(r"4 of their words are not in the model's vocabulary of 14 \('picture', 'red', 'green', 'blue'\)",
                         m) for m in messages), messages
    assert any(re.search(r"3 of the 3 distinct captions are longer than the text encoder's 8 tokens", m) for m in messages)
    # its grey model took the colour pictures as grey without a word (review 157)
    assert any(re.search(r"its model takes grey pictures, and the folder's colour pictures are trained as grey: train "
                         r"without --init to keep their colour", m) for m in messages), messages
    c = load_checkpoint(tuned).config
    assert c.caption_words == [] and c.max_length == 8 and c.captions == ["a red picture", "a green picture",
                                                                           "a blue picture"]
    from edgegen.families.text2image.model import Config, say_captions_outside_the_vocabulary

    # a folder's vocabulary and length kept onto the digits: "a thin three" was cut to "a t h" without a word
    with pytest.warns(edgegen.EdgegenWarning) as said:
        say_captions_outside_the_vocabulary(Config(max_length=5, caption_words=["a", "red", "picture"]))
    assert [str(w.message)[:80] for w in said] == [
        "text2image captions: 30 of the 30 distinct captions are longer than the text enc",
        "text2image captions: 13 of their words are not in the model's vocabulary of 3 ('"]
    with pytest.raises(DataError, match=r"channels: expected 1 for the digits \(grey\), found 3 \(given, or an --init "
                                        r"checkpoint's: a model of colour pictures\)"):
        prepare_data("digits", 16, 3, 0)

    with pytest.warns(edgegen.EdgegenWarning, match=r"1 of the 2 distinct captions are longer than the text encoder's 5 "
                                                    r"tokens, and are cut to it \(the first: 'a red red picture'\)"):
        say_captions_outside_the_vocabulary(Config(num_classes=2, max_length=5, captions=["a red picture", "a red red picture"],
                                                   caption_words=["a", "red", "picture"]))


def test_text2image_refuses_other_data_naming_both_forms(tmp_path):
    with pytest.raises(DataError, match=r"expected digits or a folder of captioned pictures \(a metadata.jsonl or "
                                        r"metadata.csv at the folder's top"):
        prepare_data("natural", 16, None, 0)
