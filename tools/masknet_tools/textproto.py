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
            body = string[1:-1]
            yield ("value",
                   bytes(body, "utf-8").decode("unicode_escape"), line)
        elif number is not None:
            number = number.rstrip("fF")
            is_float = any(c in number for c in ".eE")
            yield ("value", float(number) if is_float else int(number), line)
        elif name is not None:
            yield ("name", name, line)
        elif symbol is not None:
            yield ("symbol", symbol, line)


def _scalar(kind, value, line):
    if kind == "value":
        return value
    if kind == "name":
        return {"true": True, "false": False}.get(value, value)
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
                while tokens[position][1] != "]":
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


def first(message, name, default=None):
    """The value of field `name`, or `default` when absent."""
    values = message.get(name)
    return values[0] if values else default
