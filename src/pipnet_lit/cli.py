"""One options parser for the commands that are not Hydra jobs (compare, synthetic, predict, convert, export).

A command describes its options as a dataclass: field name, type, default and help (``option(...)``, or
``dataclasses.field(metadata={"help": ...})``); a field without a default is required. `Command` turns a
command line into an instance of that dataclass. Standard library only, so any command may use it::

    from dataclasses import dataclass
    from pathlib import Path

    from pipnet_lit.cli import Command, option

    @dataclass(kw_only=True)
    class ConvertOptions:
        official: Path = option(help="state dict saved by the official code")  # no default: required
        data: str = option(help="dataset name (300w, wflw, ...) or dataset YAML")
        backbone: str | None = option(None, help="check the weights' backbone")
        input_size: int = option(256, help="crop side in pixels")

    COMMAND = Command(ConvertOptions, prog="python -m pipnet_lit.convert", doc=__doc__, style="key=value")

    def main(argv: Sequence[str] | None = None) -> int:
        opts = COMMAND.parse_or_exit(argv)  # -h / --help: help text, exit 0; bad options: exit 2
        ...

Every command accepts both spellings, mixed freely:

* ``key=value``, ``--key value``, ``--key=value``. A key is the field name; ``-`` and ``_`` are the same
  (``--n-train`` = ``n_train=``); fields of a nested dataclass are dotted (``draw.radius=2``).
* Booleans: ``--flag``, ``--no-flag``, ``flag=true`` / ``false`` (also ``yes`` / ``no``, ``on`` / ``off``,
  ``1`` / ``0``).
* ``--`` ends the options: every later argument is a positional one. In a ``flags`` command that takes
  positional arguments, a bare ``name=value`` whose name is no option is a positional one too (a folder
  such as ``seed=0,ssl=curriculum``); elsewhere it is an unknown option.

Types: ``str``, ``int``, ``float``, ``bool``, ``Path``, ``Literal[...]`` (choices), ``X | None`` (``null``
or ``none`` give None), ``list[X]`` (``a,b``, ``[a,b]``, or the option repeated: ``--x a --x b``),
``tuple[X, Y]`` (``a,b``, or ``--key a b``), ``dict[str, X]`` (``crop.scale_x=1.2``), ``Any`` (null,
booleans, numbers, ``[lists]``, else text).

``option()`` metadata: ``help``; ``metavar`` (the value's name in the help); ``positional=True`` (the field
takes positional arguments in declaration order; a list field takes all that remain and must be the last);
``passthrough=("data.", "+data.")`` (a ``list[str]`` field that collects, unparsed, every ``key=value``
whose key starts with one of the prefixes, e.g. overrides for a Hydra config).

`Command.parse` raises `UsageError` (a ValueError): one line naming the bad key or value (an unknown key
also lists the known options), then the usage line. A ValueError raised by the dataclass itself
(``__post_init__`` checks) becomes a `UsageError` too. ``-h`` / ``--help`` raise `HelpRequested` with the
command's docstring and the generated option list. `Command.parse_or_exit` does what a ``main`` wants:
help on stdout and ``SystemExit(0)``; ``<prog>: error: ...`` and the usage line on stderr and
``SystemExit(2)``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass
from pathlib import PurePath
from typing import Any, Generic, Literal, TypeVar

__all__ = ["Command", "HelpRequested", "UsageError", "option"]

T = TypeVar("T")

#: ``key=value`` with a key that looks like an option name (``data.root``, ``+data.x``, ``n-train``); any
#: other argument (a path such as ``runs/lr=0.1``) is a positional one.
_KEY_VALUE = re.compile(r"\+{0,2}[A-Za-z_][\w.-]*=")
_NUMBER = re.compile(r"-\d|-\.\d")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_NULL = ("null", "none")


class UsageError(ValueError):
    """A bad command line. ``message``: one line naming the bad key or value; ``usage``: the usage line;
    ``str()``: both, on two lines."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(f"{message}\n{usage}")
        self.message = message
        self.usage = usage


class HelpRequested(Exception):
    """``-h`` / ``--help`` was given; ``text`` is the help to print."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def option(
    default: Any = MISSING,
    *,
    help: str = "",
    metavar: str | None = None,
    positional: bool = False,
    passthrough: Sequence[str] = (),
    default_factory: Callable[[], Any] | Any = MISSING,
) -> Any:
    """A dataclass field with the parser's metadata. No ``default`` (and no ``default_factory``): required.
    A list, dict or set default is copied for each instance (no ``default_factory`` needed)."""
    metadata = {"help": help, "metavar": metavar, "positional": positional, "passthrough": tuple(passthrough)}
    if passthrough and default is MISSING and default_factory is MISSING:
        default_factory = list
    if isinstance(default, list | dict | set):
        value = default
        default, default_factory = MISSING, lambda: copy.deepcopy(value)
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# -- the options of a command, flattened ---------------------------------------------------------------------
@dataclass
class _Option:
    path: tuple[str, ...]  # field names from the options dataclass down to this field
    type: Any  # the annotation without ``| None``
    optional: bool  # ``X | None``
    kind: str  # scalar, bool, list, tuple, dict, passthrough
    required: bool
    default: Any  # the value when not given (MISSING when required)
    help: str
    metavar: str
    positional: bool
    passthrough: tuple[str, ...]

    @property
    def key(self) -> str:
        return ".".join(self.path)

    @property
    def item(self) -> Any:
        """The element type of a list, the value type of a dict."""
        args = typing.get_args(self.type)
        return args[-1] if self.kind == "dict" else (args[0] if args else str)


def _split_optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); ``X | Y | None`` -> (X | Y, True); anything else -> (it, False)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        inner = args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007
        return inner, optional
    return annotation, False


def _kind(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "bool"
    if origin in (list, Sequence) or (origin is tuple and typing.get_args(tp)[-1:] == (Ellipsis,)):
        return "list"
    if origin is tuple:
        return "tuple"
    if origin in (dict, Mapping):
        return "dict"
    return "scalar"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(tp)) + "}"
    if origin in (typing.Union, types.UnionType):
        return "|".join(_type_name(a) for a in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "PATH"
    names = {int: "INT", float: "FLOAT", str: "TEXT", bool: "BOOL"}
    return names.get(tp, "VALUE")


def _metavar(tp: Any, kind: str) -> str:
    args = typing.get_args(tp)
    if kind == "list":
        return f"{_type_name(args[0] if args else str)}[,...]"
    if kind == "tuple":
        return ",".join(_type_name(a) for a in args)
    if kind == "dict":
        return _type_name(args[-1] if args else Any)
    return _type_name(tp)


def _flatten(cls: type, prefix: tuple[str, ...], defaults: Any) -> list[_Option]:
    """The options of dataclass ``cls``; ``defaults``: an instance of it whose values are the defaults (a
    nested dataclass field's default), or None."""
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):
        hints = {}
    found: list[_Option] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        annotation = hints.get(f.name, f.type)
        if isinstance(annotation, str):
            raise TypeError(f"{cls.__name__}.{f.name}: cannot resolve the annotation {annotation!r}")
        tp, optional = _split_optional(annotation)
        if defaults is not None:
            default = getattr(defaults, f.name)
        elif f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = MISSING
        meta = f.metadata
        path = (*prefix, f.name)
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            if optional or meta.get("positional") or meta.get("passthrough"):
                raise TypeError(
                    f"{'.'.join(path)}: a nested dataclass can be neither optional nor positional"
                )
            found += _flatten(tp, path, None if default is MISSING else default)
            continue
        passthrough = tuple(meta.get("passthrough") or ())
        kind = "passthrough" if passthrough else _kind(tp)
        found.append(
            _Option(
                path=path,
                type=tp,
                optional=optional,
                kind=kind,
                required=default is MISSING,
                default=default,
                help=meta.get("help") or "",
                metavar=meta.get("metavar")
                or (f.name.upper() if meta.get("positional") else _metavar(tp, kind)),
                positional=bool(meta.get("positional")),
                passthrough=passthrough,
            )
        )
    return found


# -- values --------------------------------------------------------------------------------------------------
def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean (true / false)")


def _literal(text: str) -> Any:
    """An ``Any`` value: null, a boolean, a number, a ``[list]`` of those, else the text."""
    text = text.strip()
    low = text.lower()
    if low in _NULL:
        return None
    if low in ("true", "false"):
        return low == "true"
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [_literal(item) for item in inner.split(",")] if inner else []
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return text


def _scalar(text: str, tp: Any) -> Any:
    """``text`` as a ``tp``; ValueError saying what was expected."""
    origin = typing.get_origin(tp)
    if tp is str:
        return text
    if tp is Any or tp is object:
        return _literal(text)
    if tp is bool:
        return _bool(text)
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
    if origin is Literal:
        for choice in typing.get_args(tp):
            if str(choice) == text:
                return choice
        choices = ", ".join(str(c) for c in typing.get_args(tp))
        raise ValueError(f"{text!r} is not one of {choices}")
    if origin in (typing.Union, types.UnionType):
        errors = []
        for candidate in typing.get_args(tp):
            try:
                return _scalar(text, candidate)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(" and ".join(errors))
    if isinstance(tp, type):
        try:
            return tp(text)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{text!r} is not a {tp.__name__} ({err})") from None
    raise TypeError(f"the parser cannot read values of type {tp!r}")


def _items(text: str) -> list[str]:
    """``a,b`` or ``[a,b]`` -> ["a", "b"]; ``""`` or ``[]`` -> []."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1].strip()
    return [item.strip() for item in text.split(",")] if text else []


# -- the command ---------------------------------------------------------------------------------------------
class Command(Generic[T]):
    """The command line of one command: its options dataclass, its name (``prog``) and help (``doc``).

    ``style`` is how the help, the usage line and the messages spell options: ``"flags"`` (``--out PATH``)
    or ``"key=value"`` (``out=PATH``); both spellings are accepted either way.
    """

    def __init__(
        self,
        options: type[T],
        *,
        prog: str,
        doc: str | None = None,
        style: Literal["flags", "key=value"] = "flags",
    ) -> None:
        if not (dataclasses.is_dataclass(options) and isinstance(options, type)):
            raise TypeError(f"Command needs a dataclass type, got {options!r}")
        if style not in ("flags", "key=value"):
            raise ValueError(f"style must be 'flags' or 'key=value', got {style!r}")
        self.options_type = options
        self.prog = prog
        self.doc = (doc or "").strip()
        self.style = style
        self.options = _flatten(options, (), None)
        positionals = [o for o in self.options if o.positional]
        lists = [o for o in positionals if o.kind == "list"]
        if lists and positionals[-1] is not lists[0] or len(lists) > 1:
            raise TypeError("only the last positional field may be a list")
        for opt in self.options:
            if opt.kind == "passthrough" and typing.get_origin(opt.type) is not list:
                raise TypeError(f"{opt.key}: a passthrough field must be list[str]")
        self._named = {o.key: o for o in self.options if not o.positional and o.kind != "passthrough"}
        self._dicts = {o.key: o for o in self._named.values() if o.kind == "dict"}

    # -- spelling --------------------------------------------------------------------------------------------
    def display(self, opt: _Option, with_value: bool = False) -> str:
        """``--n-train`` / ``n_train`` (``--n-train INT`` / ``n_train=INT`` with the value's name)."""
        if opt.positional:
            return opt.metavar + (f" [{opt.metavar} ...]" if opt.kind == "list" else "")
        if opt.kind == "passthrough":
            return ", ".join(f"{p}KEY=VALUE" for p in opt.passthrough)
        if self.style == "flags":
            name = "--" + opt.key.replace("_", "-")
            if opt.kind == "bool":
                return f"{name} / --no-{name[2:]}" if with_value else name
            if opt.kind == "dict":
                return f"{name}.KEY {opt.metavar}" if with_value else f"{name}.KEY"
            return f"{name} {opt.metavar}" if with_value else name
        if opt.kind == "dict":
            return f"{opt.key}.KEY={opt.metavar}" if with_value else f"{opt.key}.KEY"
        return f"{opt.key}={opt.metavar}" if with_value else opt.key

    def usage(self) -> str:
        """``usage: <prog> <required options> [options] <positionals>``."""
        parts = [self.prog]
        parts += [self.display(o, with_value=True) for o in self._named.values() if o.required]
        if any(not o.required or o.kind == "passthrough" for o in self.options if not o.positional):
            parts.append("[options]" if self.style == "flags" else "[key=value ...]")
        for opt in (o for o in self.options if o.positional):
            parts.append(self.display(opt) if opt.required else f"[{self.display(opt)}]")
        return "usage: " + " ".join(parts)

    def help(self) -> str:
        """The docstring, the usage line and one line per option (its help, its default)."""
        rows: list[tuple[str, str]] = []
        positionals = [o for o in self.options if o.positional]
        named = [o for o in self.options if not o.positional]
        for opt in positionals + named:
            text = opt.help
            if opt.required and not opt.positional:
                text += " (required)"
            elif not opt.required and opt.kind != "passthrough" and "default" not in text:
                text += f" (default: {_show(opt.default)})"
            rows.append((self.display(opt, with_value=True), text.strip()))
        rows.append(("-h, --help", "show this help and exit"))
        width = min(max(len(name) for name, _ in rows) + 2, 34)
        lines = [self.doc, ""] if self.doc else []
        lines += [self.usage(), ""]
        if positionals:
            lines.append("positional arguments:")
            lines += [_row(name, text, width) for name, text in rows[: len(positionals)]]
            lines.append("")
        lines.append("options:")
        lines += [_row(name, text, width) for name, text in rows[len(positionals) :]]
        return "\n".join(lines) + "\n"

    def known(self) -> str:
        """The known options, comma-separated, as this command spells them."""
        names = [self.display(o) for o in self.options if not o.positional and o.kind != "passthrough"]
        for opt in self.options:
            if opt.kind == "passthrough":
                names += [f"{p}*" for p in opt.passthrough]
        return ", ".join(names)

    def _error(self, message: str) -> UsageError:
        return UsageError(message, self.usage())

    # -- parsing ---------------------------------------------------------------------------------------------
    def parse(self, argv: Sequence[str] | None = None) -> T:
        """The options dataclass from ``argv`` (default ``sys.argv[1:]``); `UsageError` or `HelpRequested`."""
        args = list(sys.argv[1:] if argv is None else argv)
        end = args.index("--") if "--" in args else len(args)
        if any(a in ("-h", "--help") for a in args[:end]):
            raise HelpRequested(self.help())
        state = _State(self)
        i = 0
        while i < len(args):
            token = args[i]
            i += 1
            if state.only_positionals:
                state.positionals.append(token)
            elif token == "--":
                state.only_positionals = True
            elif token.startswith("--") and len(token) > 2:
                key, eq, value = token[2:].partition("=")
                i = state.named(key, value if eq else None, args, i, token)
            elif _is_option(token):
                raise self._error(f"unknown option {token!r} (known: {self.known()})")
            elif _KEY_VALUE.match(token) and not state.is_path(token):
                key, _, value = token.partition("=")
                state.named(key, value, args, i, token)
            else:
                state.positionals.append(token)
        return state.build()

    def parse_or_exit(self, argv: Sequence[str] | None = None) -> T:
        """`parse`, for a ``main``: help -> stdout, ``SystemExit(0)``; a bad command line -> ``<prog>: error:
        <message>`` and the usage line on stderr, ``SystemExit(2)``."""
        try:
            return self.parse(argv)
        except HelpRequested as done:
            print(done.text, end="")
            raise SystemExit(0) from None
        except UsageError as err:
            print(f"{self.prog}: error: {err.message}\n{err.usage}", file=sys.stderr)
            raise SystemExit(2) from None


def _is_option(token: str) -> bool:
    """``-x`` or ``--x``, not a negative number or a lone ``-``."""
    return token.startswith("-") and len(token) > 1 and not _NUMBER.match(token)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return ",".join(_show(v) for v in value) or "[]"
    return str(value)


def _row(name: str, text: str, width: int) -> str:
    if not text:
        return f"  {name}"
    if len(name) + 2 > width:
        return f"  {name}\n  {'':{width}}{text}"
    return f"  {name:{width}}{text}"


class _State:
    """What one `Command.parse` call has read so far."""

    def __init__(self, command: Command[Any]) -> None:
        self.command = command
        self.values: dict[str, Any] = {}  # option key -> value
        self.positionals: list[str] = []
        self.only_positionals = False

    def _lookup(self, key: str) -> tuple[_Option, str | None] | None:
        """(option, dict key or None) for a normalized key."""
        named, dicts = self.command._named, self.command._dicts
        if key in named:
            return named[key], None
        for name, opt in dicts.items():
            if key.startswith(name + "."):
                return opt, key[len(name) + 1 :]
        return None

    def is_path(self, token: str) -> bool:
        """A bare ``name=value`` whose name is no option, in a ``flags`` command that takes positional
        arguments: a positional one (a folder such as ``seed=0,ssl=curriculum``), as before the parser."""
        command = self.command
        if command.style != "flags" or not any(o.positional for o in command.options):
            return False
        key = token.partition("=")[0]
        if any(key.startswith(o.passthrough) for o in command.options if o.kind == "passthrough"):
            return False
        return self._lookup(key.replace("-", "_")) is None

    def _unknown(self, key: str, token: str) -> UsageError:
        command = self.command
        names = list(command._named) + [n.replace("_", "-") for n in command._named]
        close = difflib.get_close_matches(key, names, n=1)
        hint = (
            f"; did you mean {command.display(command._named[close[0].replace('-', '_')])}?" if close else ""
        )
        shown = token.partition("=")[0]
        return command._error(f"unknown option {shown!r}{hint} (known: {command.known()})")

    def named(self, raw_key: str, value: str | None, args: list[str], i: int, token: str) -> int:
        """Read one option (``value`` None: ``--key`` without ``=``, which may take the next arguments);
        returns the index of the next argument to read."""
        command = self.command
        for opt in command.options:
            if opt.kind == "passthrough" and raw_key.startswith(opt.passthrough):
                if value is None:
                    if i >= len(args):
                        raise command._error(f"{token} needs a value ({raw_key}=VALUE)")
                    value, i = args[i], i + 1
                self.values.setdefault(opt.key, []).append(f"{raw_key}={value}")
                return i
        key = raw_key.replace("-", "_")
        found = self._lookup(key)
        if found is None and value is None and key.startswith("no_"):  # --no-flag, --no-draw.points
            negative = self._lookup(key[3:])
            if negative is not None and negative[0].kind == "bool":
                self.values[negative[0].key] = False
                return i
        if found is None:
            raise self._unknown(raw_key, token)
        opt, subkey = found
        if value is None:
            if opt.kind == "bool":
                self.values[opt.key] = True
                return i
            if i >= len(args) or _is_option(args[i]):
                raise command._error(f"{command.display(opt)} needs a value ({opt.metavar})")
            value, i = args[i], i + 1
            if opt.kind == "tuple":
                count = len(typing.get_args(opt.type))
                if len(_items(value)) == 1 and count > 1:  # --key a b: one value per argument
                    extra = args[i : i + count - 1]
                    value, i = ",".join([value, *extra]), i + len(extra)
        if opt.kind == "dict" and subkey is None and not (opt.optional and value.strip().lower() in _NULL):
            entry = command.display(opt, with_value=True)
            raise command._error(f"{command.display(opt)[:-4]} takes one entry at a time: {entry}")
        try:
            self._set(opt, subkey, value)
        except ValueError as err:
            shown = command.display(opt) if subkey is None else f"{command.display(opt)[:-3]}{subkey}"
            raise command._error(f"bad value for {shown}: {err}") from None
        return i

    def _set(self, opt: _Option, subkey: str | None, value: str) -> None:
        if opt.optional and subkey is None and value.strip().lower() in _NULL:
            self.values[opt.key] = None
            return
        if opt.kind == "dict":
            current = self.values.get(opt.key, MISSING)
            if current is MISSING or current is None:
                current = dict(opt.default) if isinstance(opt.default, Mapping) else {}
            current[subkey] = _scalar(value, opt.item)
            self.values[opt.key] = current
        elif opt.kind == "list":
            items = [_scalar(item, opt.item) for item in _items(value)]
            previous = self.values.get(opt.key)
            self.values[opt.key] = (previous or []) + items if isinstance(previous, list) else items
        elif opt.kind == "tuple":
            types_ = typing.get_args(opt.type)
            items = _items(value)
            if len(items) != len(types_):
                raise ValueError(f"{value!r} has {len(items)} values, expected {len(types_)} ({opt.metavar})")
            self.values[opt.key] = tuple(_scalar(v, t) for v, t in zip(items, types_, strict=True))
        else:
            self.values[opt.key] = _scalar(value, opt.type)

    def _assign_positionals(self) -> None:
        command = self.command
        rest = list(self.positionals)
        for opt in (o for o in command.options if o.positional):
            if opt.kind == "list":
                taken, rest = rest, []
                if taken:
                    try:
                        self.values[opt.key] = [_scalar(t, opt.item) for t in taken]
                    except ValueError as err:
                        raise command._error(f"bad value for {opt.metavar}: {err}") from None
            elif rest:
                token = rest.pop(0)
                try:
                    self.values[opt.key] = _scalar(token, opt.type)
                except ValueError as err:
                    raise command._error(f"bad value for {opt.metavar}: {err}") from None
        if rest:
            extra = " ".join(repr(t) for t in rest)
            raise command._error(f"unexpected argument{'s' if len(rest) > 1 else ''} {extra}")

    def build(self) -> Any:
        command = self.command
        self._assign_positionals()
        missing = [o for o in command.options if o.required and o.key not in self.values]
        if missing:
            names = ", ".join(
                o.metavar if o.positional else command.display(o, with_value=True) for o in missing
            )
            raise command._error(f"missing required argument{'s' if len(missing) > 1 else ''}: {names}")
        tree: dict[str, Any] = {}
        for key, value in self.values.items():
            node = tree
            *parents, last = key.split(".")
            for name in parents:
                node = node.setdefault(name, {})
            node[last] = value
        try:
            return _construct(command.options_type, tree)
        except ValueError as err:  # the dataclass's own checks
            raise command._error(str(err).splitlines()[0] if str(err) else type(err).__name__) from None


def _construct(cls: type, tree: dict[str, Any], default: Any = None) -> Any:
    """An instance of dataclass ``cls`` from the given values (nested dicts for nested dataclasses) over
    ``default`` (an instance, or None: the dataclass's own defaults)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in tree:
            continue
        value = tree[f.name]
        tp, _ = _split_optional(hints.get(f.name, f.type))
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            if default is not None:
                base = getattr(default, f.name)
            elif f.default is not MISSING:
                base = f.default
            elif f.default_factory is not MISSING:
                base = f.default_factory()
            else:
                base = None
            value = _construct(tp, value, base)
        kwargs[f.name] = value
    if default is not None:
        return dataclasses.replace(default, **kwargs)
    return cls(**kwargs)
