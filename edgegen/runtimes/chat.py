"""Chat templates of imported instruct models: the Jinja template a transformers tokenizer
carries (chat_template.jinja, additional_chat_templates/NAME.jinja, or tokenizer_config.json's
chat_template), rendered as transformers' apply_chat_template renders it, so a conversation
becomes the text the model was fine-tuned on.

A template is code from the checkpoint's author: it runs in jinja2's immutable sandbox with the
settings and helpers transformers gives it (trim_blocks, lstrip_blocks, loop controls,
raise_exception, strftime_now, a tojson that keeps non-ASCII text), and sees plain JSON data
only.

Runtime code: no torch; jinja2 (the text extra).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache

import numpy as np

from ..errors import InputError, MissingExtraError, PackageError, first_line

# older versions have known sandbox escapes, and a template is someone else's code (transformers
# refuses them too)
MIN_JINJA = (3, 1, 6)
# the variables apply_chat_template gives a template beside the messages: transformers 5's
# special_tokens_map (the named tokens, each as its text)
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
DEFAULT_TEMPLATE = "default"
# what a template reads that the conversation itself gives: not the caller's to set
OWN_VARIABLES = ("messages", "add_generation_prompt")
TOOL_TEMPLATE = "tool_use"   # the template transformers takes for a call that passes tools, where there is one
# names a message's reasoning comes under; templates read the first (Qwen3's), gpt-oss's the second
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
# a variable the renderer takes for itself, as apply_chat_template does: the reply goes on from the
# last message's text (true: its content; a name: that field) instead of a new turn
CONTINUE_FINAL_MESSAGE = "continue_final_message"
CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "   # transformers' marker: where the last message's text ends


class ChatTemplates:
    """A package's chat templates ({name: Jinja source}) and the special tokens they read."""

    def __init__(self, sources: dict[str, str], special_tokens: dict[str, str], where: str):
        self.sources, self.special_tokens, self.where = sources, special_tokens, where

    @property
    def names(self) -> list[str]:
        return sorted(self.sources)

    def render(self, messages, variables: dict | None = None, template: str | None = None,
               what: str = "messages") -> str:
        """The conversation `messages` (a list of {"role", "content", ...} dicts) as the model's
        template writes it, the assistant's turn opened (add_generation_prompt), or with
        continue_final_message among `variables` its last message left open. `variables`:
        what else the template reads (tools, documents, enable_thinking, ...). `template`: a
        template's name, or Jinja source of the caller's own; None takes "tool_use" where the
        variables pass tools and the package has it, else "default". `what` names the
        conversation in messages."""
        variables = chat_variables(variables)
        continued = _continued_field(variables.pop(CONTINUE_FINAL_MESSAGE, False), variables)
        source, name = self._source(template, variables.get("tools") is not None)
        conversation = conversation_messages(messages, what)
        compiled = _compiled(source, name, self.where)
        final = _mark_final_message(conversation, continued, source, name, what) if continued else None
        try:
            text = compiled.render(messages=conversation, add_generation_prompt=not continued,
                                   **{"tools": None, "documents": None, **self.special_tokens, **variables})
        except RecursionError:
            raise InputError(f"{what}: the chat template {name} failed on the conversation: it recursed without "
                             "end") from None
        except Exception as exc:  # noqa: BLE001 - raise_exception's refusal (roles that do not alternate), a content
            # the template cannot join (a list of parts where it adds text), what the sandbox refuses: the
            # template's finding on this conversation, said in one line
            raise InputError(f"{what}: the chat template {name} refused the conversation: {first_line(exc)} "
                             f"({type(exc).__name__})") from None
        return _cut_at_mark(text, final, name, what) if continued else text

    def _source(self, template: str | None, with_tools: bool) -> tuple[str, str]:
        """(the Jinja source, its name for messages)."""
        if template is not None and not isinstance(template, str):
            raise InputError(f"chat_template: expected a template's name or Jinja source, found {template!r:.60}")
        if template is not None and ("{" in template or "\n" in template):
            return template, "given"
        if template is None:
            template = TOOL_TEMPLATE if with_tools and TOOL_TEMPLATE in self.sources else DEFAULT_TEMPLATE
        if template not in self.sources:
            held = f"its templates are {', '.join(map(repr, self.names))}" if self.sources else "it has none"
            raise InputError(f"chat_template {template!r}: expected a template of {self.where}, found none by that name "
                             f"({held}; or pass a template's Jinja source)")
        return self.sources[template], repr(template)


def chat_variables(variables) -> dict:
    """What else a template reads, as plain JSON data: a dict of names other than the
    conversation's own (OWN_VARIABLES)."""
    if variables is None:
        return {}
    if not isinstance(variables, dict) or not all(isinstance(k, str) for k in variables):
        raise InputError(f"chat_template_kwargs: expected a dict of what the template reads, found {variables!r:.60}")
    # add_generation_prompt beside continue_final_message, as a transformers call passes it: _continued_field's
    taken = sorted(name for name in OWN_VARIABLES if name in variables
                   and not (name == "add_generation_prompt" and variables.get(CONTINUE_FINAL_MESSAGE)))
    if taken:
        raise InputError(f"chat_template_kwargs: expected variables other than the conversation's own, found "
                         f"{', '.join(taken)} (the prompt is the messages; the reply always follows them)")
    return {key: plain_json(value, key) for key, value in variables.items()}


def conversation_messages(messages, what: str = "messages") -> list[dict]:
    """A non-empty list of messages, each with a string role, as plain JSON data, as
    transformers normalizes them: a message may be a dict, a dataclass or a pydantic model (an
    OpenAI client's reply); keys whose value is None are left out (an API's content=None: many
    templates would write "None"); a message's reasoning is under each of REASONING_FIELDS."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise InputError(f"{what}: expected a non-empty list of messages ({{'role': ..., 'content': ...}}), "
                         f"found {messages!r:.80}")
    conversation = []
    for i, given in enumerate(messages):
        message = plain_json(given, f"{what}[{i}]") if _is_message(given) else None
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InputError(f"{what}[{i}]: expected a message, a dict with a string 'role' (and its 'content'), "
                             f"found {given!r:.80}")
        message = {key: value for key, value in message.items() if value is not None}
        reasoning = next((message[key] for key in REASONING_FIELDS if key in message), None)
        if reasoning is not None:   # transformers' order: the templates that list a message's keys see it so
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        conversation.append(message)
    return conversation


def is_conversation(value) -> bool:
    """Whether `value` is one conversation: a list of messages (a prompt of text or token ids
    is never one)."""
    return isinstance(value, (list, tuple)) and bool(value) and all(map(_is_message, value))


def _is_message(value) -> bool:
    """A dict, or an object transformers takes as one: a dataclass or a pydantic model."""
    return isinstance(value, Mapping) or _dataclass_instance(value) or callable(getattr(value, "model_dump", None))


def _dataclass_instance(value) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def plain_json(value, where: str):
    """`value` rebuilt from JSON's types (what a template may see: an object's methods are
    not the sandbox's to judge), or InputError naming the first thing that is not. As
    transformers: subclasses of str, int and float (enums) and numpy scalars become the plain
    value, dataclasses and pydantic models their fields."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    for plain in (str, int, float):
        if isinstance(value, plain):
            return plain(value) if plain is not str else str.__str__(value)
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    if isinstance(value, Mapping):
        if bad := next((k for k in value if not isinstance(k, str)), None):
            raise InputError(f"{where}: expected string keys, found {bad!r}")
        return {str.__str__(key): plain_json(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple)):   # a tuple kept one, as transformers keeps it: a template printing it shows (...)
        items = [plain_json(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return tuple(items) if type(value) is tuple else items
    if _dataclass_instance(value):
        return {f.name: plain_json(getattr(value, f.name), f"{where}.{f.name}") for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return plain_json(value.model_dump(), where)
    raise InputError(f"{where}: expected JSON data (text, numbers, lists, dicts), found {type(value).__name__} "
                     f"{value!r:.60}")


def _continued_field(value, variables: dict) -> str | None:
    """continue_final_message's field, as transformers reads the value: None where it is false
    (False, None, "", 0), the field a text names, else "content". `variables` may then hold
    add_generation_prompt false, as a transformers call beside it does (taken out); true is refused."""
    opened = variables.pop("add_generation_prompt", None) if value and "add_generation_prompt" in variables else None
    if opened:
        raise InputError(f"{CONTINUE_FINAL_MESSAGE} and add_generation_prompt: expected one of them (going on from the "
                         "last message, or opening a new reply after it), found both")
    if not value:
        return None
    if not isinstance(value, (str, bool, int)):
        raise InputError(f"{CONTINUE_FINAL_MESSAGE}: expected true, false or the name of the last message's field to go "
                         f"on from, found {value!r:.60}")
    return value if isinstance(value, str) else "content"


def _mark_final_message(conversation: list[dict], field: str, source: str, name: str, what: str) -> str:
    """Put CONTINUE_TAG after the last message's text in `field` (every reasoning field that
    holds it, for one of those; a list of parts: its last text part), so the rendered text can
    be cut there; returns that text, as apply_chat_template does."""
    last = conversation[-1]
    final = last.get(field)
    if final is None:
        raise InputError(f"{what}[-1]: expected a {field!r} to continue ({CONTINUE_FINAL_MESSAGE}), found the "
                         f"last message, of role {last['role']!r}, without one")
    fields = [f for f in REASONING_FIELDS if last.get(f) == final] if field in REASONING_FIELDS else [field]
    if not any(f in source for f in fields):
        raise InputError(f"{CONTINUE_FINAL_MESSAGE} {field!r}: expected a field the chat template {name} reads, "
                         f"found no {' or '.join(fields)} in it")
    if isinstance(final, (list, tuple)):   # parts: their dicts are the conversation's own copies
        part = next((p for p in reversed(final) if isinstance(p, dict) and isinstance(p.get("text"), str)), None)
        if part is None:
            raise InputError(f"{what}[-1][{field!r}]: expected a text part to continue ({CONTINUE_FINAL_MESSAGE}), "
                             "found none")
        final, part["text"] = part["text"], part["text"] + CONTINUE_TAG
        return final
    if not isinstance(final, str):
        raise InputError(f"{what}[-1][{field!r}]: expected text to continue ({CONTINUE_FINAL_MESSAGE}), found "
                         f"{type(final).__name__}")
    for f in fields:
        last[f] = final + CONTINUE_TAG
    return final


def _cut_at_mark(text: str, final: str, name: str, what: str) -> str:
    """The rendered conversation up to the end of the last message's text (CONTINUE_TAG's
    place; before the spaces a template stripped from the text, where it did)."""
    if final.strip() not in text or CONTINUE_TAG.strip() not in text:
        raise InputError(f"{what}: the chat template {name} did not write the last message's text whole, so the reply "
                         f"cannot go on from it ({CONTINUE_FINAL_MESSAGE}): expected {final.strip()!r:.60} in the "
                         "rendered prompt")
    mark = text.rindex(CONTINUE_TAG.strip())
    return text[:mark] if text.startswith(CONTINUE_TAG, mark) else text[:mark].rstrip()


@lru_cache(maxsize=16)
def _compiled(source: str, name: str, where: str):
    """The template compiled once per source (a package's few, or a caller's own)."""
    if problem := template_problem(source):
        if name == "given":   # the caller's own, not the package's
            raise InputError(f"chat_template (the Jinja source given): expected a Jinja template, found {problem}")
        raise PackageError(f"chat template {name} of {where}: expected a Jinja template, found {problem}")
    return _environment().from_string(source)


@lru_cache(maxsize=1)
def _environment():
    """jinja2's immutable sandbox as transformers sets it up for chat templates."""
    try:
        import jinja2
        from jinja2.ext import Extension, loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise MissingExtraError("chat templates need jinja2, part of the text extra: pip install 'edgegen[text]' "
                                "(found no jinja2 here)") from None
    version = tuple(int(part) for part in jinja2.__version__.split(".")[:3] if part.isdigit())
    if version < MIN_JINJA:
        raise MissingExtraError(f"jinja2: expected {'.'.join(map(str, MIN_JINJA))} or later (older versions' sandbox "
                                f"can be escaped, and a chat template is the checkpoint author's code), found "
                                f"{jinja2.__version__}: pip install -U jinja2")

    class GenerationBlocks(Extension):
        """{% generation %}...{% endgeneration %}: marks the assistant's text for training masks; its
        text is written as is."""
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_written"), [], [], body).set_lineno(lineno)

        def _written(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # jinja2's own escapes HTML characters, which a prompt must keep
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    class Namespace(jinja2.utils.Namespace):
        """jinja2's namespace() without underscore names, which could reach Python's internals."""

        def __init__(*args, **kwargs):   # jinja2's own signature: namespace(self=...) is a name like any other
            self, attributes = args[0], dict(*args[1:], **kwargs)
            for name in attributes:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attributes)

        def __setitem__(self, name, value):
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"a chat template may not set {name!r} on a namespace")

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[GenerationBlocks, loopcontrols])
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = lambda format: datetime.now().strftime(format)
    environment.globals["dict"] = _TemplateDict()   # not the dict type itself
    environment.globals["namespace"] = Namespace
    return environment


class _TemplateDict:
    """dict() and dict.fromkeys() for templates, without the type itself (transformers' own)."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


def template_problem(source: str) -> str | None:
    """Why `source` is no Jinja template (its syntax error, at a line), or None."""
    environment = _environment()   # first: without jinja2 it says which extra holds it
    import jinja2

    try:
        environment.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return f"a syntax error at line {exc.lineno}: {exc.message}"
    return None


def load_chat_templates(package, record: dict) -> ChatTemplates | None:
    """The templates a token package's config records ({"templates": {name: {"file", "sha256"}},
    "special_tokens": {...}}), each file checked against its sha256; None where it records none."""
    if not record:
        return None
    sources = {}
    for name, entry in record["templates"].items():
        path = package.recorded_file(entry, f"config.chat_templates.templates.{name}", f"chat template {name!r}")
        try:
            sources[name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:   # hashed at export as it is: the file itself was never text
            raise PackageError(f"package {str(package.path)!r}: chat template {name!r} {entry['file']!r}: expected "
                               f"UTF-8 text, found byte {exc.object[exc.start]:#x} at {exc.start}") from None
    return ChatTemplates(sources, dict(record.get("special_tokens", {})), f"package {str(package.path)!r}")


def chat_record_problems(record: dict) -> list[str]:
    """What is wrong with a config's chat_templates record, for the config's problems()."""
    if not record:
        return []
    templates, tokens = record.get("templates"), record.get("special_tokens", {})
    problems = []
    if not isinstance(templates, dict) or not templates or not all(isinstance(e, dict) for e in templates.values()):
        problems.append(f"chat_templates.templates expected {{name: {{file, sha256}}}}, found {templates!r:.80}")
    if not isinstance(tokens, dict) or not all(k in SPECIAL_TOKEN_NAMES and isinstance(v, str) for k, v in tokens.items()):
        problems.append(f"chat_templates.special_tokens expected texts of {', '.join(SPECIAL_TOKEN_NAMES)}, "
                        f"found {tokens!r:.80}")
    return problems
