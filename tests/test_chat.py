"""Chat templates: an imported instruct model's conversation prompt, rendered and encoded as
transformers' apply_chat_template renders and encodes it, and the reply generated from it."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import edgegen  # noqa: E402
from edgegen.cli import main  # noqa: E402
from edgegen.errors import CheckpointError, HashMismatchError, InputError, PackageError  # noqa: E402
from edgegen.training.text import stdlib_files  # noqa: E402

from test_gpt import _tiny_llama  # noqa: E402

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>"]
# Qwen2.5's ChatML template, shortened: a default system turn, tools as JSON lines
CHATML = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
    {{- "\\n\\n# Tools\\n\\n<tools>" }}
    {%- for tool in tools %}{{- "\\n" }}{{- tool | tojson }}{%- endfor %}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- elif messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- else %}
    {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if not (message.role == "system" and loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""
# Mistral's: the start of text written by the template, roles that must alternate, a namespace,
# a generation block (a training template's assistant mask), the end of text after each reply
INST = """{{ bos_token }}{% set ns = namespace(turns=0) %}
{% for message in messages %}
{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
{% endif %}
{% if message['role'] == 'user' %}[INST] {{ message['content'] }} [/INST]{% set ns.turns = ns.turns + 1 %}
{% else %}{% generation %}{{ message['content'] }}{% endgeneration %}{{ eos_token }}
{% endif %}
{% endfor %}"""
CONVERSATION = [{"role": "system", "content": "Answer in Python."},
                {"role": "user", "content": "Sort a list — in place?"},
                {"role": "assistant", "content": "xs.sort()"},
                {"role": "user", "content": "And a copy?", "tool_calls": None}]
TOOLS = [{"type": "function", "function": {"name": "run", "description": "Runs code: «x»",
                                           "parameters": {"type": "object", "properties": {"code": {"type": "string"}}}}}]


def _chat_tokenizer(folder, **settings):
    """A byte-level BPE trained on the standard library, with ChatML's and Llama's special tokens,
    saved by transformers (tokenizer.json, tokenizer_config.json, chat_template.jinja). Like a
    Llama's, it puts <s> before a text it encodes with special tokens: a chat prompt, whose
    template writes its own start, is encoded without."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator([path.read_text() for path in stdlib_files()[:40]], trainers.BpeTrainer(
        vocab_size=500, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", SPECIAL.index("<s>"))])
    theirs = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, **{
        "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": CHATML, **settings})
    theirs.save_pretrained(folder)
    return theirs


@pytest.fixture(scope="module")
def chat_package(tmp_path_factory):
    """A random Qwen2 with a ChatML tokenizer whose end of turn ends generation, exported."""
    root = tmp_path_factory.mktemp("chat")
    model = _tiny_llama(root / "hf", "qwen2", vocab_size=512, eos_token_id=2, bos_token_id=None)
    tokenizer = _chat_tokenizer(root / "hf")
    assert (root / "hf" / "chat_template.jinja").is_file()   # transformers 5's own form of a saved template
    assert main(["export", "qwen2", "--from-transformers", str(root / "hf"), "--out", str(root / "pkg")]) == 0
    return {"root": root, "pkg": root / "pkg", "model": model, "tokenizer": tokenizer}


def test_a_conversation_is_rendered_encoded_and_answered_as_transformers_does(chat_package):
    """The prompt text and ids are apply_chat_template's (add_generation_prompt=True), and the
    greedy reply is transformers' generate's, token for token, cut at the end of turn."""
    import torch

    pipe = edgegen.load(chat_package["pkg"], backend="ort-cpu")
    tokenizer, model = chat_package["tokenizer"], chat_package["model"]
    assert pipe.chat_templates.names == ["default"]
    for kwargs in ({}, {"tools": TOOLS}):
        text = tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True, **kwargs)
        assert pipe.chat_prompt(CONVERSATION, **kwargs) == text
    assert "«x»" in pipe.chat_prompt(CONVERSATION, tools=TOOLS)   # tojson keeps non-ASCII text, as transformers' does
    ids = tokenizer.apply_chat_template(CONVERSATION, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert pipe.tokenizer.encode(pipe.chat_prompt(CONVERSATION)) == ids
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.eos_token_id = end_of_turn
    theirs = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, pad_token_id=0)[0, len(ids):].tolist()
    pipe.config.eos_token_id = pipe.eos_token_id = end_of_turn   # the end of turn the random model may reach
    reply = pipe.generate(CONVERSATION, max_new_tokens=24, do_sample=False)
    cut = theirs[:theirs.index(end_of_turn)] if end_of_turn in theirs else theirs
    assert reply == tokenizer.decode(cut)
    assert "".join(pipe.stream(CONVERSATION, max_new_tokens=24, do_sample=False)) == reply
    # a batch of conversations: one reply each, as each alone
    assert pipe.generate([CONVERSATION, CONVERSATION[:2]], max_new_tokens=8, do_sample=False) == [
        pipe.generate(c, max_new_tokens=8, do_sample=False) for c in (CONVERSATION, CONVERSATION[:2])]


def test_the_command_line_answers_a_chat_message(chat_package, capsys):
    """--chat (with --system) prints the reply alone, the one the Python API gives."""
    pipe = edgegen.load(chat_package["pkg"], backend="ort-cpu")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "def f(x):"}]
    expected = pipe.generate(messages, max_new_tokens=6, do_sample=False)
    assert main(["generate", str(chat_package["pkg"]), "--chat", "def f(x):", "--system", "Be brief.", "--greedy",
                 "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out == expected + "\n"
    assert main(["generate", str(chat_package["pkg"]), "--chat", "x", "--prompt", "y"]) == 2
    assert "--prompt, --prompt-ids or --chat: expected one of them" in capsys.readouterr().err
    assert main(["generate", str(chat_package["pkg"]), "--prompt", "x", "--system", "y"]) == 2
    assert "--system: expected with --chat" in capsys.readouterr().err
    assert main(["generate", str(chat_package["pkg"]), "--chat", "x", "--chat-option", "tools"]) == 2
    assert "--chat-option 'tools': expected NAME=VALUE" in capsys.readouterr().err
    # a value that would reach the template as text where JSON was meant ("False" is true there)
    assert main(["generate", str(chat_package["pkg"]), "--chat", "x", "--chat-option", "enable_thinking=False"]) == 2
    assert "--chat-option enable_thinking=False: expected JSON's false, found Python's False" in capsys.readouterr().err
    assert main(["generate", str(chat_package["pkg"]), "--chat", "x", "--chat-option", "tools=[{"]) == 2
    assert "--chat-option tools: expected JSON (it starts like it), found it failing to parse" in capsys.readouterr().err


def test_the_command_line_goes_on_from_a_reply_start_and_takes_a_template(chat_package, tmp_path, capsys):
    """--reply-start: the reply prints from its start, as the Python API continues it;
    --chat-template: one of the package's templates by name, or a .jinja file."""
    pipe = edgegen.load(chat_package["pkg"], backend="ort-cpu")
    begun = [{"role": "user", "content": "def f(x):"}, {"role": "assistant", "content": "return"}]
    expected = pipe.generate(begun, max_new_tokens=5, do_sample=False, chat_template_kwargs={"continue_final_message": True})
    run = ["generate", str(chat_package["pkg"]), "--chat", "def f(x):", "--greedy", "--max-new-tokens", "5"]
    assert main(run + ["--reply-start", "return"]) == 0
    assert capsys.readouterr().out == "return" + expected + "\n"
    (tmp_path / "inst.jinja").write_text(INST)
    expected = pipe.generate(begun[:1], max_new_tokens=5, do_sample=False, chat_template=INST)
    assert main(run + ["--chat-template", str(tmp_path / "inst.jinja")]) == 0
    assert capsys.readouterr().out == expected + "\n"
    assert main(run + ["--chat-template", "default"]) == 0
    assert capsys.readouterr().out == pipe.generate(begun[:1], max_new_tokens=5, do_sample=False) + "\n"
    # a .jinja file without a brace or a line break is still a file's template, not a name (review 154)
    (tmp_path / "plain.jinja").write_text("def f(x):")
    assert main(run + ["--chat-template", str(tmp_path / "plain.jinja")]) == 0
    assert capsys.readouterr().out == pipe.generate(begun[:1], max_new_tokens=5, do_sample=False,
                                                    chat_template="def f(x):\n") + "\n"
    assert main(run + ["--chat-option", "add_generation_prompt=true"]) == 2
    assert "--chat-option add_generation_prompt: expected it left to --chat" in capsys.readouterr().err
    # a template that trims the start's trailing space: printed as the model saw it, not with two spaces (helper 152)
    (tmp_path / "trim.jinja").write_text("{% for m in messages %}{{ m.role }}: {{ m.content | trim }}\n{% endfor %}")
    spaced = [begun[0], {"role": "assistant", "content": "return "}]
    expected = pipe.generate(spaced, max_new_tokens=5, do_sample=False, chat_template=(tmp_path / "trim.jinja").read_text(),
                             chat_template_kwargs={"continue_final_message": True})
    assert main(run + ["--chat-template", str(tmp_path / "trim.jinja"), "--reply-start", "return "]) == 0
    assert capsys.readouterr().out == "return" + expected + "\n"
    for extra, said in ((["--chat-template", "rag"], "--chat-template 'rag': expected a template of package"),
                        (["--chat-template", str(tmp_path / "gone.jinja")], "gone.jinja': expected a readable UTF-8 "
                                                                            ".jinja file, found No such file"),
                        (["--chat-option", "continue_final_message=true"],   # it went on from --chat's message
                         "--chat-option continue_final_message: expected --reply-start TEXT instead")):
        assert main(run + extra) == 2
        assert said in capsys.readouterr().err
    assert main(["generate", str(chat_package["pkg"]), "--prompt", "x", "--reply-start", "y"]) == 2
    assert "--reply-start: expected with --chat" in capsys.readouterr().err


def test_chat_options_reach_the_template(chat_package, capsys):
    """--chat-option NAME=VALUE: a JSON value (tools, true, 3), else the text itself."""
    pipe = edgegen.load(chat_package["pkg"], backend="ort-cpu")
    messages = [{"role": "user", "content": "hi"}]
    expected = pipe.generate(messages, max_new_tokens=4, do_sample=False, chat_template_kwargs={"tools": TOOLS})
    assert main(["generate", str(chat_package["pkg"]), "--chat", "hi", "--greedy", "--max-new-tokens", "4",
                 "--chat-option", "tools=" + json.dumps(TOOLS)]) == 0
    assert capsys.readouterr().out == expected + "\n"


# Qwen3's reasoning turns, shortened: an assistant message's reasoning_content in <think> tags
THINKING = """{%- for message in messages %}
{{- '<|im_start|>' + message.role + '\\n' }}
{%- if message.role == 'assistant' and message.reasoning_content is defined %}
{{- '<think>\\n' + message.reasoning_content.strip('\\n') + '\\n</think>\\n\\n' }}
{%- endif %}
{{- message.content + '<|im_end|>\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"""


def test_a_reply_goes_on_from_its_start_and_messages_are_normalized_as_transformers_does(chat_package):
    """continue_final_message renders the conversation up to the end of its last message's text
    (a reply begun), as apply_chat_template does, on templates that keep or strip its spaces and
    on a reasoning field; thinking/reasoning reach a template reading reasoning_content; a
    message may be a dataclass or a pydantic-like object, and values numpy scalars or enums."""
    import dataclasses
    import enum

    pipe, tokenizer = edgegen.load(chat_package["pkg"], backend="ort-cpu"), chat_package["tokenizer"]

    def theirs(messages, **kwargs):
        return tokenizer.apply_chat_template(messages, tokenize=False, **{"add_generation_prompt": True, **kwargs})

    begun = CONVERSATION[1:] + [{"role": "assistant", "content": "Use sorted(xs) "}]   # roles alternate, for [INST]
    for template in (CHATML, INST):   # ChatML keeps the trailing space; [INST]'s generation block too
        ours = pipe.chat_prompt(begun, chat_template=template, continue_final_message=True)
        assert ours == theirs(begun, chat_template=template, continue_final_message=True, add_generation_prompt=False)
        assert ours.endswith("Use sorted(xs) ")
    stripped = "{% for m in messages %}{{ m.role }}: {{ m.content | trim }}\n{% endfor %}"
    assert pipe.chat_prompt(begun, chat_template=stripped, continue_final_message=True) == theirs(
        begun, chat_template=stripped, continue_final_message=True, add_generation_prompt=False)
    # the reply, generated on from its start: the same tokens as the prompt text continued
    reply = pipe.generate(begun, max_new_tokens=6, do_sample=False, chat_template_kwargs={"continue_final_message": True})
    text = pipe.chat_prompt(begun, continue_final_message=True)
    ids = pipe.tokenizer.encode(text, special_tokens=False)
    assert reply == pipe.tokenizer.decode(pipe.generate([ids], max_new_tokens=6, do_sample=False)[0])
    # reasoning: under any of its three names, and continued in a reasoning field
    for name in ("reasoning_content", "thinking", "reasoning"):
        thought = CONVERSATION[1:3] + [{"role": "assistant", name: "\nthink first", "content": "xs.sort()"}]
        assert pipe.chat_prompt(thought, chat_template=THINKING) == theirs(thought, chat_template=THINKING)
        assert "<think>\nthink first\n</think>" in pipe.chat_prompt(thought, chat_template=THINKING)
    parts = "{% for m in messages %}{% for p in m.content %}{{ p.text }}{% endfor %}|{% endfor %}"
    in_parts = [{"role": "user", "content": ({"type": "text", "text": "Sort "},)},   # a tuple of parts (review 154)
                {"role": "assistant", "content": ({"type": "text", "text": "Use "},)}]
    assert pipe.chat_prompt(in_parts, chat_template=parts, continue_final_message=True) == theirs(
        in_parts, chat_template=parts, continue_final_message=True, add_generation_prompt=False) == "Sort |Use "
    partial = CONVERSATION[1:2] + [{"role": "assistant", "thinking": "First, ", "content": ""}]
    assert pipe.chat_prompt(partial, chat_template=THINKING, continue_final_message="thinking") == theirs(
        partial, chat_template=THINKING, continue_final_message="thinking", add_generation_prompt=False)
    # objects transformers takes as messages and values
    Role = enum.Enum("Role", {"user": "user"}, type=str)

    @dataclasses.dataclass
    class Message:
        role: str
        content: str

    class Reply:   # an OpenAI client's reply message: a pydantic model
        def model_dump(self):
            return {"role": "assistant", "content": "xs.sort()", "tool_calls": None}

    objects = [Message(Role.user, "Sort a list?"), Reply(), {"role": "user", "content": "And a copy?"}]
    plain = [{"role": "user", "content": "Sort a list?"}, {"role": "assistant", "content": "xs.sort()"},
             {"role": "user", "content": "And a copy?"}]
    assert pipe.chat_prompt(objects) == theirs(plain)
    assert pipe.generate(objects, max_new_tokens=3, do_sample=False) == pipe.generate(plain, max_new_tokens=3,
                                                                                        do_sample=False)
    numbered = "{{ n }} {{ flag }}{% for m in messages %}{{ m.content }}{% endfor %}"
    assert pipe.chat_prompt(plain, chat_template=numbered, n=np.int64(3), flag=np.bool_(False)) == "3 False" + "".join(
        m["content"] for m in plain)
    # transformers' readings of the value, and add_generation_prompt=False beside it, as its callers write it
    cut = pipe.chat_prompt(begun, continue_final_message=True)
    assert pipe.chat_prompt(begun, continue_final_message=1) == cut
    assert pipe.chat_prompt(begun, continue_final_message=True, add_generation_prompt=False) == cut
    assert pipe.chat_prompt(begun, continue_final_message="") == pipe.chat_prompt(begun, continue_final_message=0) == \
        pipe.chat_prompt(begun)
    with pytest.raises(InputError, match="continue_final_message and add_generation_prompt: expected one of them"):
        pipe.chat_prompt(begun, continue_final_message=True, add_generation_prompt=True)
    # keys that are str subclasses become plain text, tuples stay tuples, as transformers makes them (helper 152)
    Key = enum.Enum("Key", {"description": "description"}, type=str)
    raw = "{% for t in tools %}{% for k, v in t.items() %}{{ k }}={{ v }};{% endfor %}{% endfor %}{{ stop }}"
    for kwargs in ({"tools": [{Key.description: "Weather"}], "stop": ("x",)},):
        assert pipe.chat_prompt(plain, chat_template=raw, **kwargs) == theirs(plain, chat_template=raw, **kwargs) == \
            "description=Weather;('x',)"
    with pytest.raises(InputError, match=r"^chat_template \(the Jinja source given\): expected a Jinja template, found a "
                                         r"syntax error at line 1"):
        pipe.chat_prompt(plain, chat_template="{% for m in messages %}")
    # refusals: nothing to continue, a field the template never reads, a template that drops the text
    for messages, kwargs, said in (
            (plain, {"continue_final_message": "reasoning_content"}, "expected a 'reasoning_content' to continue"),
            (partial, {"continue_final_message": "thinking"}, "expected a field the chat template 'default' reads, "
                                                              "found no reasoning_content or thinking in it"),
            (plain, {"continue_final_message": [1]}, "continue_final_message: expected true, false or the name"),
            (begun, {"continue_final_message": True, "chat_template": "{{ messages[0].content }}"},
             "did not write the last message's text whole, so the reply cannot go on from it")):
        with pytest.raises(InputError, match=re.escape(said)):
            pipe.chat_prompt(messages, **kwargs)


def test_named_templates_and_the_old_form_of_tokenizer_config_are_taken(tmp_path):
    """tokenizer_config.json's chat_template as one string (before transformers' template files)
    or a list of named ones; additional_chat_templates/NAME.jinja beside chat_template.jinja, as
    transformers saves several. A call with tools (an empty list too) takes "tool_use" where there
    is one, as transformers does."""
    from edgegen.families.gpt.hf_import import _chat_templates
    from edgegen.runtimes.chat import ChatTemplates

    folder, scratch = tmp_path / "hf", tmp_path / "scratch"
    scratch.mkdir()
    _chat_tokenizer(folder, chat_template=None, bos_token="<s>")
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    named = [{"name": "default", "template": INST}, {"name": "tool_use", "template": CHATML}]
    for value, names in ((INST, ["default"]), (named, ["default", "tool_use"])):
        (folder / "tokenizer_config.json").write_text(json.dumps({**settings, "chat_template": value}))
        files, record = _chat_templates(folder, scratch)
        assert sorted(record["templates"]) == names and set(files) == set(record["templates"].values())
        ours = ChatTemplates({name: files[file].read_text() for name, file in record["templates"].items()},
                             record["special_tokens"], "here")
        theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
        for kwargs in ({}, {"tools": TOOLS}, {"tools": []}):   # with tools: "tool_use" where there is one
            assert ours.render(CONVERSATION[1:], kwargs) == theirs.apply_chat_template(
                CONVERSATION[1:], tokenize=False, add_generation_prompt=True, **kwargs)
    assert ours.render(CONVERSATION[1:]).startswith("<s>[INST] Sort")   # bos_token: the template writes it
    # transformers' own save of several: chat_template.jinja and additional_chat_templates/, which replace
    # tokenizer_config.json's
    saved = tmp_path / "saved"
    transformers.AutoTokenizer.from_pretrained(str(folder)).save_pretrained(saved)
    assert (saved / "additional_chat_templates" / "tool_use.jinja").is_file()
    files, record = _chat_templates(saved, scratch)
    assert sorted(record["templates"]) == ["default", "tool_use"]
    # checked at import, not at a first conversation on a device
    (saved / "chat_template.jinja").write_bytes(b"\xff\xfe{{ messages }}")
    with pytest.raises(CheckpointError, match="chat_template.jinja: expected a chat template in UTF-8 text, found byte 0xff"):
        _chat_templates(saved, scratch)
    (saved / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}")
    with pytest.raises(CheckpointError, match="chat template 'default': expected a Jinja template, found a syntax error "
                                              "at line 1"):
        _chat_templates(saved, scratch)


def test_a_templates_refusals_and_a_callers_own_template(chat_package, shipped_package):
    """raise_exception's message, data a template may not see, and a package without a template
    are InputErrors that say what was expected; a caller's own Jinja source renders anywhere."""
    pipe = edgegen.load(chat_package["pkg"], backend="ort-cpu")
    alternating = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(InputError, match="refused the conversation: Conversation roles must alternate"):
        pipe.generate(alternating, chat_template=INST)
    assert pipe.chat_prompt(alternating[:1], chat_template=INST) == chat_package["tokenizer"].apply_chat_template(
        alternating[:1], chat_template=INST, tokenize=False, add_generation_prompt=True)
    with pytest.raises(InputError, match=r"prompt\[1\]\['content'\]: expected JSON data .* found ndarray"):
        pipe.generate([{"role": "user", "content": "a"}, {"role": "assistant", "content": np.zeros(2)}])
    with pytest.raises(InputError, match=r"prompt\[0\]: expected a message, a dict with a string 'role'"):
        pipe.generate([{"content": "a"}])
    with pytest.raises(InputError, match=r"prompt\[1\]: expected a conversation as the batch's others are"):
        pipe.generate([alternating[:1], []])   # it named prompt[0]'s messages as token ids
    # content as a list of parts, which ChatML's template joins as text: the template's finding, in one line
    with pytest.raises(InputError, match="chat template 'default' refused the conversation: can only concatenate str .*"
                                         r"\(TypeError\)"):
        pipe.generate([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    with pytest.raises(InputError, match="chat_template_kwargs: expected variables other than the conversation's own, "
                                         "found add_generation_prompt"):
        pipe.chat_prompt(alternating[:1], add_generation_prompt=False)
    with pytest.raises(InputError, match="chat_template 'rag': expected a template of package .*its templates are 'default'"):
        pipe.generate(alternating[:1], chat_template="rag")
    with pytest.raises(InputError, match="chat_template_kwargs: expected with a conversation prompt"):
        pipe.generate("text", chat_template_kwargs={"enable_thinking": False})
    with pytest.raises(InputError, match="access to attribute '__class__'"):   # the sandbox
        pipe.chat_prompt(alternating[:1], chat_template="{{ messages.__class__.__mro__ }}")
    own = edgegen.load(shipped_package("gpt-stdlib"))
    with pytest.raises(InputError, match="a conversation needs a chat template, found none in package .*edgegen's own "
                                         "models are not chat models.*chat_template= in Python"):
        own.generate(alternating[:1])
    template = "{% for m in messages %}# {{ m.content }}\n{% endfor %}def"
    assert own.generate(alternating, chat_template=template, max_new_tokens=8, seed=1) == \
        own.generate("# a\n# b\ndef", max_new_tokens=8, seed=1)


def test_a_changed_template_and_an_import_that_did_not_keep_it_are_said(chat_package, tmp_path, capsys):
    """The template is hashed like the tokenizer; a package imported before templates were kept
    (its config records none) is told to export again."""
    changed = tmp_path / "changed"
    shutil.copytree(chat_package["pkg"], changed)
    (changed / "chat_template.jinja").write_text("{{ messages }}")
    with pytest.raises(HashMismatchError, match="chat template 'default' 'chat_template.jinja' expected sha256"):
        edgegen.load(changed, backend="ort-cpu")
    assert main(["info", str(changed)]) == 1   # info says what load refuses
    assert "chat template 'default' 'chat_template.jinja' expected sha256" in capsys.readouterr().out
    older = tmp_path / "older"
    shutil.copytree(chat_package["pkg"], older)
    manifest = json.loads((older / "edgegen.json").read_text())
    del manifest["config"]["chat_templates"]
    (older / "edgegen.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="its checkpoint folder had none, or an edgegen before December 7, 2026 "
                                         "imported it, which recorded none: export it again"):
        edgegen.load(older, backend="ort-cpu").generate([{"role": "user", "content": "a"}])
    broken = tmp_path / "broken"
    shutil.copytree(chat_package["pkg"], broken)
    manifest = json.loads((broken / "edgegen.json").read_text())
    manifest["config"]["chat_templates"]["special_tokens"] = {"bos": 1}
    (broken / "edgegen.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="chat_templates.special_tokens expected texts of bos_token"):
        edgegen.load(broken, backend="ort-cpu")


def test_a_served_request_carries_a_conversation(chat_package, shipped_package):
    """edgegen triton's GPT request takes `messages` (JSON) in place of a prompt, where the package
    has a chat template, and its reply streams as generate's does; the inputs say what they
    expect, named as the client sent them (no Triton server needed)."""
    from edgegen.families import get
    from edgegen.serving.requests import arguments, served

    pipe = edgegen.load(chat_package["pkg"], backend="ort-cpu")
    request = served(get("gpt"), pipe.config)
    fields = {field.name: field for field in request.inputs}
    assert not fields["prompt"].required and not fields["messages"].required

    def answered(**values):
        sent = {name: np.array([value.encode() if isinstance(value, str) else value],
                               dtype=object if isinstance(value, str) else None) for name, value in values.items()}
        pieces = request.answer(pipe, arguments(request.inputs, sent))
        return "".join(piece["text"][0].decode() for piece in pieces)

    messages = [{"role": "user", "content": "def f(x):"}]
    assert answered(messages=json.dumps(messages), max_new_tokens=6, greedy=True) == \
        pipe.generate(messages, max_new_tokens=6, do_sample=False)
    assert answered(prompt="def f(x):", max_new_tokens=6, greedy=True) == \
        pipe.generate("def f(x):", max_new_tokens=6, do_sample=False)   # a prompt, as an older client sends
    assert answered(messages=json.dumps(messages), chat_template_kwargs=json.dumps({"tools": TOOLS}), max_new_tokens=4,
                    greedy=True) == pipe.generate(messages, max_new_tokens=4, do_sample=False,
                                                  chat_template_kwargs={"tools": TOOLS})
    begun, going_on = messages + [{"role": "assistant", "content": "return"}], {"continue_final_message": True}
    assert answered(messages=json.dumps(begun), chat_template_kwargs=json.dumps(going_on), max_new_tokens=4,
                    greedy=True) == pipe.generate(begun, max_new_tokens=4, do_sample=False, chat_template_kwargs=going_on)
    for values, said in (({}, "'prompt' and 'messages': expected one of them, found neither"),
                         ({"prompt": "x", "messages": "[]"}, "expected one of them, found both"),
                         ({"messages": "[{"}, "request input 'messages': expected JSON text"),
                         ({"messages": '{"role": "user"}'}, "'messages': expected a JSON array, found an object"),
                         ({"messages": '["hi"]'}, "request input 'messages'[0]: expected a message, a dict with a string"),
                         ({"messages": json.dumps([{"role": "user", "content": ["x"]}])},   # the pipeline's own, named so
                          "request input 'messages': the chat template 'default' refused the conversation"),
                         ({"prompt": "x", "chat_template_kwargs": "{}"}, "expected with 'messages', found it with 'prompt'")):
        with pytest.raises(InputError, match=re.escape(said)):
            answered(**values)
    # a package without a chat template: a prompt, required, as before
    own = edgegen.load(shipped_package("gpt-stdlib"))
    own_inputs = {field.name: field for field in served(get("gpt"), own.config).inputs}
    assert own_inputs["prompt"].required and "messages" not in own_inputs
