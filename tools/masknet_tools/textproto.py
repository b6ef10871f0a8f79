"""Protobuf text format read without the schema, for other frameworks' configs.

TorchEasyRec's pipeline config is a protobuf text file whose .proto files we
do not have. `parse` reads any text-format message into plain Python values:
a message is a dict from field name to the list of its values (every field
may repeat); a value is a nested dict, a string, a number, a bool (`true`,
`false`) or an enum name (a str). `first` and `all_of` read a field.
"""

import re

_TOKEN = re.compile(
    r"""\s*(?:(\#[^\n]*)|("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')|"""
    r"""([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fF]?(?![A-Za-z_]))|"""
    r"""([A-Za-z_][A-Za-z0-9_.]*)|([{}<>:\[\],;]))""")


class TextProtoError(ValueError):
    """The text is not in protobuf text format; says where."""


def _tokens(text):
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            rest = text[position:].lstrip()
            if not rest:
                return
            line = text.count("\n", 0, len(text) - len(rest)) + 1
            raise TextProtoError(f"line {line}: unexpected {rest[:20]!r}")
        position = match.end()
        comment, string, number, name, symbol = match.groups()
        line = text.count("\n", 0, match.start(match.lastindex)) + 1
        if comment is not None:
            continue
        if string is not None:
            yield ("value", _unescape(string[1:-1]), line)
        elif number is not None:
            number = number.rstrip("fF")
            is_float = any(c in number for c in ".eE")
            yield ("value", float(number) if is_float else int(number), line)
        elif name is not None:
            yield ("name", name, line)
        elif symbol is not None:
            yield ("symbol", symbol, line)


def _unescape(body):
    """A string literal's text: C escapes (octal, hex bytes) decoded on its
    UTF-8 bytes, so that non-ASCII text survives."""
    decoded = body.encode("utf-8").decode("unicode_escape")
    try:
        return decoded.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):  # \u escapes, stray bytes
        return decoded


def _scalar(kind, value, line):
    if kind == "value":
        return value
    if kind == "name":  # protobuf text's spellings of a bool, else an enum
        return {
            "true": True,
            "True": True,
            "t": True,
            "false": False,
            "False": False,
            "f": False
        }.get(value, value)
    raise TextProtoError(f"line {line}: expected a value, got {value!r}")


def parse(text):
    """The message in `text` as a dict of field name -> list of values."""
    tokens = list(_tokens(text))
    position = 0

    def message(closing):
        nonlocal position
        fields = {}
        while True:
            if position == len(tokens):
                if closing is None:
                    return fields
                raise TextProtoError(f"missing {closing!r} at the end")
            kind, value, line = tokens[position]
            if kind == "symbol" and value == closing:
                position += 1
                return fields
            if kind == "symbol" and value in ",;":
                position += 1
                continue
            if kind != "name":
                raise TextProtoError(
                    f"line {line}: expected a field name, got {value!r}")
            name = value
            position += 1
            if position < len(tokens) and tokens[position][1] == ":":
                position += 1
            if position == len(tokens):
                raise TextProtoError(f"line {line}: {name} has no value")
            kind, value, line = tokens[position]
            values = fields.setdefault(name, [])
            if kind == "symbol" and value in "{<":
                position += 1
                values.append(message("}" if value == "{" else ">"))
            elif kind == "symbol" and value == "[":
                position += 1
                while position < len(tokens) and tokens[position][1] != "]":
                    if tokens[position][1] != ",":
                        values.append(_scalar(*tokens[position]))
                    position += 1
                if position == len(tokens):
                    raise TextProtoError(f"line {line}: missing ']'")
                position += 1
            else:
                values.append(_scalar(kind, value, line))
                position += 1

    return message(None)


def all_of(message, name):
    """Every value of field `name` (a list, empty when absent)."""
    return message.get(name, [])


def first(message, name, default=None, kind=None):
    """The value of field `name`, or `default` when absent.

    With `kind` (bool, int, float, str or dict), a value of another type is a
    TextProtoError naming the field (an int is a float; 0 and 1 are bools).
    """
    values = message.get(name)
    value = values[0] if values else default
    if kind is None or value is None or values is None:
        return value
    if kind is bool and value in (0, 1) and not isinstance(value, float):
        return bool(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TextProtoError(
            f"{name}: expected {'a message' if kind is dict else kind.__name__}"
            f", got {value!r}")
    return value
