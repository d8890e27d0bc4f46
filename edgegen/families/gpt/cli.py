"""`edgegen generate` for token packages: the continuation of --prompt streams to the terminal."""

from __future__ import annotations

import json
import os
import re
import sys

from pathlib import Path

import numpy as np

from ...errors import ConfigError, InputError
from ...families import GenerateRequest, Option
from ...runtimes.chat import CONTINUE_FINAL_MESSAGE
from ...storage import refuse_nameless
from ...wording import counted

CLI_MAX_NEW_TOKENS = 200   # a terminal's continuation: longer than the Python API's default
PYTHON_CONSTANTS = {"True": "true", "False": "false", "None": "null"}   # --chat-option's JSON, spelled as Python would

OPTIONS = (
    Option("--prompt", "prompt", "(required) text to continue (or --prompt-ids)"),
    Option("--prompt-ids", "prompt_ids", "token ids to continue, comma-separated (a package imported without a "
           "tokenizer takes ids only); the prompt's ids print, then the new ones as they come", {"metavar": "ID,ID,..."}, served=False),
    Option("--chat", "chat", "a message to a chat model, made a prompt by the package's chat template (an imported "
           "instruct model's); the reply alone prints", {"metavar": "TEXT"}, served=False),
    Option("--system", "system", "the system message before --chat's", {"metavar": "TEXT"}, served=False),
    Option("--chat-option", "chat_template_kwargs", "a value the chat template reads, as NAME=VALUE (repeatable): JSON "
           "where it parses (enable_thinking=false, tools='[...]'), else the text", {"action": "append",
                                                                                    "metavar": "NAME=VALUE"},
           served=False),
    Option("--chat-template", "chat_template", "which of the package's chat templates makes --chat's prompt (info lists "
           "them under chat_templates; default: its default, or tool_use with tools), or a .jinja file of your own",
           {"metavar": "NAME|FILE.jinja"}, served=False),
    Option("--reply-start", "reply_start", "the start of the reply, which the model goes on from (it prints before the "
           "rest): the assistant's last message, continued (continue_final_message)", {"metavar": "TEXT"}, served=False),
    Option("--max-new-tokens", "max_new_tokens", f"tokens to generate at most (default: {CLI_MAX_NEW_TOKENS}, or "
           "what the model's context leaves after the prompt where that is fewer)", {"type": int}),
    # the sampling settings' defaults are the package's (an imported model's generation_config.json), else
    # edgegen's: sampling at temperature 1, no top-k or top-p, no penalty
    Option("--temperature", "temperature", "softmax temperature (default: the package's, else 1)", {"type": float}),
    Option("--top-k", "top_k", "sample from the k most likely tokens (0: all; default: the package's, else all)",
           {"type": int}),
    Option("--top-p", "top_p", "sample from the most likely tokens that make up this probability (default: the "
           "package's, else all)", {"type": float}),
    Option("--repetition-penalty", "repetition_penalty", "divide the logits of tokens already seen by this (default: "
           "the package's, else 1)", {"type": float}),
    Option("--greedy", "greedy", "always take the most likely token (default: the package's: greedy for a model "
           "imported from transformers unless its generation_config.json samples)", {"action": "store_true"}),
    Option("--sample", "sample", "sample the next token (edgegen's own packages' default)", {"action": "store_true"}),
    Option("--stop", "stop", "stop at this text, or after this token id with --prompt-ids (repeatable; the text as the "
           "shell passes it: \\n is a backslash and an n, bash's $'\\n' a newline)",
           {"action": "append"}),
    Option("--prompt-lookup", "prompt_lookup_num_tokens",
           "each decoder call also checks up to N tokens copied from earlier in the text and keeps those the model "
           "chooses (prompt lookup decoding: the same text, faster where it repeats its context; int4 and int8-weights "
           "round a call of several tokens differently, so their sampled text may part from it)", {"type": int}, 0),
    Option("--cache-budget-mb", "cache_budget_mb",
           "refuse a run whose KV cache (and logits) would need more memory", {"type": float}, 1024.0),
)


def check_generate(options: dict, out: str | None) -> None:
    """Before the package loads: one of --prompt, --prompt-ids and --chat, and a .txt --out if any."""
    _prompt(dict(options))   # (the prompt, chat template variables or None)
    if out:
        refuse_nameless(out, ".txt", "--out")
    if out and not str(out).lower().endswith(".txt"):
        raise ConfigError(f"--out {out!r}: expected a .txt file to write a token package's text to, found "
                          f"{os.path.splitext(str(out))[1] or 'no extension'}")


def generate(pipe, request: GenerateRequest) -> str:
    options = dict(request.options)
    prompt, chat = _prompt(options)   # chat: the pipeline's chat keywords for --chat, else None
    options.update(chat or {})
    as_ids = isinstance(prompt, list) and chat is None
    options["do_sample"] = _do_sample(options, "--greedy", "--sample")
    _refuse_sampling_settings_when_greedy(pipe, {**options, "seed": request.seed if request.seed_given else None})
    if as_ids and options.get("stop"):   # ids in, ids out: a stop of digits is a token id
        options["stop"] = [int(s) if re.fullmatch(r"\s*-?[0-9]+\s*", s) else s for s in options["stop"]]   # -5: refused as an id
    flag = "--chat" if chat is not None else "--prompt-ids" if as_ids else "--prompt"
    try:
        left = pipe.context_left(prompt, **(chat or {}))
    except InputError as exc:   # the pipeline calls both "prompt"
        raise InputError(flag + str(exc)[len("prompt"):] if str(exc).startswith("prompt:") else str(exc)) from None
    if options.get("max_new_tokens") is None:   # the default fits the prompt (200 after a 59-token one was refused)
        if left <= 0:
            raise InputError(f"{flag}: expected fewer tokens than the model's context of {pipe.context}, found "
                             f"{pipe.context - left}")
        options["max_new_tokens"] = min(CLI_MAX_NEW_TOKENS, left)
    elif isinstance(options["max_new_tokens"], int) and options["max_new_tokens"] > max(left, 0):   # named by flags
        given, used = options["max_new_tokens"], pipe.context - left
        raise InputError(f"{flag} ({counted(used, 'token')}) + --max-new-tokens ({given}): expected at most the model's context "
                         f"of {pipe.context} tokens, found {used + given}")
    shown = (lambda token: f" {token}") if as_ids else str   # ids as numbers, text as it is
    from . import pipeline

    try:   # the options are checked before the first piece: a refusal prints no text
        stream = pipe.stream(prompt, seed=request.seed, **options)
        first = next(stream, None)
    except pipeline.CacheBudgetError as exc:
        raise exc.on_command_line() from None
    if chat is None:   # the prompt, then what follows it
        pieces = [" ".join(map(str, prompt)) if as_ids else prompt]
    else:   # a chat's reply alone (its prompt is the template's markup), from --reply-start's beginning
        pieces = [_reply_start_as_rendered(pipe, prompt, chat)] if _continued(chat) else []
    pieces += [shown(first)] if first is not None else []
    reader_gone = None   # stdout's reader went away (| head): with --out the text still goes whole to the file

    def show(text: str) -> None:
        nonlocal reader_gone
        if reader_gone is None:
            try:
                print(text, end="", flush=True)
            except BrokenPipeError as exc:
                if not request.out:
                    raise
                reader_gone = exc

    show("".join(pieces))
    for piece in stream:
        pieces.append(shown(piece))
        show(pieces[-1])
    show("\n")
    if request.out:
        from ...storage import atomic_write_text

        atomic_write_text(request.out, "".join(pieces), follow_symlink=True)
        print(f"wrote {request.out}", file=sys.stderr)
    if reader_gone is not None:
        raise reader_gone   # the quiet status 141 the command gives a closed pipe, now that the file is written
    return ""


def _refuse_sampling_settings_when_greedy(pipe, options: dict) -> None:
    """--temperature, --top-k, --top-p or --seed where the decoding is greedy (--greedy, or the
    package's default), said with the command line's flags (the pipeline refuses the first three
    too, by keyword; a seed it takes, as transformers does, since a caller may pass one always)."""
    flags = {"temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p", "seed": "--seed"}
    unused = pipe.unused_by_greedy(options["do_sample"], **{key: options.get(key) for key in flags})
    if unused:
        how = "--greedy" if options["do_sample"] is False else "greedy decoding, this package's default"
        raise ConfigError(f"{flags[unused[0]]}: expected with sampling (--sample), found {how}: greedy takes the most "
                          "likely token, whatever the sampling settings")


def _do_sample(options: dict, *names: str) -> bool | None:
    """The greedy and sample flags' choice, taken out of `options`; None (neither given): the
    package's default. A served request may also send one as false, meaning the other (an older
    client's greedy: false asks for sampling)."""
    greedy, sample = options.pop("greedy", None), options.pop("sample", None)
    if greedy is not None and sample is not None and greedy == sample:
        raise ConfigError(f"{' and '.join(names)}: expected one of them, found both {'true' if greedy else 'false'}")
    return (not greedy) if greedy is not None else sample


def _prompt(options: dict) -> tuple[str | list, dict | None]:
    """(--prompt's text, --prompt-ids' ids or --chat's conversation (one of them), the
    pipeline's chat keywords: chat_template_kwargs (--chat-option's, and continue_final_message
    with --reply-start), chat_template where --chat-template names one; None without --chat),
    each flag taken out of `options`."""
    text, ids, chat = options.pop("prompt", None), options.pop("prompt_ids", None), options.pop("chat", None)
    system, chat_options = options.pop("system", None), options.pop("chat_template_kwargs", None)
    template, reply_start = options.pop("chat_template", None), options.pop("reply_start", None)
    given = [flag for flag, value in (("--prompt", text), ("--prompt-ids", ids), ("--chat", chat)) if value is not None]
    if len(given) != 1:
        raise ConfigError(f"--prompt, --prompt-ids or --chat: expected one of them for a gpt package, found "
                          f"{' and '.join(given) or 'none'}")
    for flag, value in (("--system", system), ("--chat-option", chat_options), ("--chat-template", template),
                        ("--reply-start", reply_start)):
        if value is not None and chat is None:
            raise ConfigError(f"{flag}: expected with --chat (a chat model's conversation), found {given[0]}")
    if chat is not None:
        conversation = [*([{"role": "system", "content": system}] if system is not None else []),
                        {"role": "user", "content": chat},
                        *([{"role": "assistant", "content": reply_start}] if reply_start is not None else [])]
        variables = _chat_options(chat_options or [])
        if CONTINUE_FINAL_MESSAGE in variables:   # it would go on from --chat's own message, printed as the reply
            raise ConfigError(f"--chat-option {CONTINUE_FINAL_MESSAGE}: expected --reply-start TEXT instead (the start "
                              "of the reply to go on from), found it as a template variable")
        if "add_generation_prompt" in variables:   # --chat opens the reply, --reply-start goes on from one begun
            raise ConfigError("--chat-option add_generation_prompt: expected it left to --chat (which opens the reply) "
                              "and --reply-start (which goes on from one begun), found it given")
        if reply_start is not None:
            variables[CONTINUE_FINAL_MESSAGE] = True
        keywords = {"chat_template_kwargs": variables}
        return conversation, keywords | ({"chat_template": _chat_template(template)} if template is not None else {})
    if text is not None:
        return text, None
    try:
        return [int(part) for part in ids.split(",")], None
    except ValueError:
        raise ConfigError(f"--prompt-ids: expected token ids separated by commas (1,2,3), found {ids!r}") from None


def _continued(chat: dict) -> bool:
    """Whether the chat keywords go on from the conversation's last message."""
    return bool(chat["chat_template_kwargs"].get(CONTINUE_FINAL_MESSAGE))


def _reply_start_as_rendered(pipe, conversation: list, chat: dict) -> str:
    """--reply-start as the model saw it: without the trailing spaces a template trims (the reply
    then starts with its own, and the start as given printed two)."""
    start = conversation[-1]["content"]
    return start if pipe.chat_prompt(conversation, chat.get("chat_template"), **chat["chat_template_kwargs"]).endswith(
        start) else start.rstrip()


def _chat_template(given: str) -> str:
    """--chat-template: a template's name, or a .jinja file's Jinja source."""
    if not given.lower().endswith(".jinja"):
        if "{" in given or "\n" in given:   # the pipeline would take it as source: a file's path was meant
            raise ConfigError(f"--chat-template {given!r:.60}: expected a template's name or a .jinja file, found "
                              "template text (write it to a .jinja file)")
        return given
    try:   # as source however it reads: a file without a brace or a line break would be taken for a name
        source = Path(given).read_text(encoding="utf-8")
        return source if "{" in source or "\n" in source else source + "\n"   # jinja2 drops one final newline
    except OSError as exc:
        found = exc.strerror or str(exc)
    except UnicodeDecodeError:
        found = "bytes that are not UTF-8"
    raise ConfigError(f"--chat-template {given!r}: expected a readable UTF-8 .jinja file, found {found}")


def _chat_options(given: list[str]) -> dict:
    """--chat-option NAME=VALUE, each: VALUE as JSON where it parses (false, 3, a list of tools),
    else as the text given."""
    options = {}
    for item in given:
        name, equals, value = item.partition("=")
        if not equals or not name.isidentifier():
            raise ConfigError(f"--chat-option {item!r}: expected NAME=VALUE (enable_thinking=false), found "
                              + ("no '='" if not equals else f"{name!r}, not a name a template reads"))
        if name in options:
            raise ConfigError(f"--chat-option {name}: expected once, found it twice")
        try:
            options[name] = json.loads(value)
        except ValueError as exc:
            # a value meant as JSON, mistyped, or Python's spelling, would reach the template as text:
            # "False" is a true value there, and a list of tools a string iterated by character
            if value in PYTHON_CONSTANTS:
                raise ConfigError(f"--chat-option {name}={value}: expected JSON's {PYTHON_CONSTANTS[value]}, found "
                                  f"Python's {value}") from None
            if value.lstrip()[:1] in ("[", "{", '"'):
                raise ConfigError(f"--chat-option {name}: expected JSON (it starts like it), found it failing to parse: "
                                  f"{exc}") from None
            options[name] = value
    return options


def served(config):
    """The served request (edgegen triton): the options above, the text streamed piece by
    piece through Triton's decoupled mode, as `edgegen generate` prints it. A package with chat
    templates takes a conversation instead of a prompt: `messages`, a JSON list of {"role",
    "content"} messages (and `chat_template_kwargs`, a JSON object of what its template reads),
    whose reply streams; its prompt is then optional, one of the two required (_served_prompt)."""
    from ...serving.requests import Field, Served, option_field

    chat = bool(config.chat_templates)

    def answer(pipe, arguments: dict):
        arguments = dict(arguments)
        arguments["do_sample"] = _do_sample(arguments, "greedy", "sample")
        prompt, said_as = _served_prompt(arguments) if chat else (arguments.pop("prompt"), "prompt")
        try:   # the pipeline calls a conversation "prompt" too: said as the input the client sent
            stream = pipe.stream(prompt, **arguments)
        except InputError as exc:
            raise InputError(said_as + str(exc)[len("prompt"):] if str(exc).startswith("prompt") else str(exc)) from None
        for piece in stream:
            yield {"text": np.array([piece.encode("utf-8")], dtype=np.object_)}

    inputs = (Field("seed", "int64"), *(Field(o.keyword, "string") if chat and o.keyword == "prompt" else option_field(o)
                                        for o in OPTIONS if o.served),
              *((Field("messages", "string"), Field("chat_template_kwargs", "string")) if chat else ()))
    return Served(inputs, (Field("text", "string"),), answer, streams=True)


JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
              bool: "true or false", type(None): "null"}   # a parsed value's type, in JSON's words


def _served_prompt(arguments: dict) -> tuple:
    """(a served request's prompt, its text, or conversation, its messages as JSON; the input's
    name for messages), taken out of `arguments`, with the conversation's template variables set
    there as the pipeline's chat_template_kwargs."""
    from ...runtimes.chat import conversation_messages

    prompt, messages = arguments.pop("prompt", None), arguments.pop("messages", None)
    if (prompt is None) == (messages is None):
        raise InputError(f"request inputs 'prompt' and 'messages': expected one of them, found "
                         f"{'both' if prompt is not None else 'neither'}")
    if prompt is not None:
        if "chat_template_kwargs" in arguments:
            raise InputError("request input 'chat_template_kwargs': expected with 'messages', found it with 'prompt'")
        return prompt, "request input 'prompt'"
    if "chat_template_kwargs" in arguments:
        arguments["chat_template_kwargs"] = _json_input("chat_template_kwargs", arguments["chat_template_kwargs"], dict)
    messages = _json_input("messages", messages, list)
    conversation_messages(messages, "request input 'messages'")   # else a list of texts would be a batch of prompts
    return messages, "request input 'messages'"


def _json_input(name: str, text: str, kind: type):
    """A request input of JSON text, parsed, of JSON's `kind` (an array, an object)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InputError(f"request input {name!r}: expected JSON text, found text it cannot parse ({exc}); send the "
                         "JSON as one string") from None
    if not isinstance(value, kind):
        raise InputError(f"request input {name!r}: expected a JSON {JSON_TYPES[kind].split()[-1]}, found "
                         f"{JSON_TYPES.get(type(value), type(value).__name__)}")
    return value
