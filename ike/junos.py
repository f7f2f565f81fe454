"""Junos configuration syntax: curly-brace text or `set` lines -> one statement tree.

Syntax only; what the statements mean is ike/vpn_config.py's job. Both forms of
`show configuration` are read (one file is one or the other; the first word decides):

    security { ike { proposal P1 { dh-group group14; } } }
    set security ike proposal P1 dh-group group14

Comments are `#` (to the end of the line) and `/* ... */`; strings may be quoted ("..."
with \\" and \\\\ escapes); `[ a b c ]` is a list of values. A `set` line is flat, so which of
its words open containers and how many names a container takes comes from a `Shape` (the
statement table of the caller). The curly form goes through the same shape, so
`route 10.0.0.0/8 next-hop st0.0;` and `set ... route 10.0.0.0/8 next-hop st0.0` build the
same tree. `inactive:` statements and `deactivate ...` lines are dropped, as Junos does.

Every problem is a ConfigError whose str is one line: `gw.conf:12: unterminated string`.
Nothing else escapes parse(), whatever the input (tests fuzz it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple, Optional, Protocol

#: Tuning bound: deeper nesting than any real Junos configuration has is refused.
MAX_DEPTH = 64


class ConfigError(ValueError):
    """A configuration problem. str(err) is one line: 'FILE:LINE: message'."""

    def __init__(self, filename: str, line: Optional[int], message: str):
        where = f"{filename}:{line}" if line else filename
        super().__init__(f"{where}: {message}")
        self.filename, self.line, self.message = filename, line, message


class Shape(Protocol):
    """What a statement table tells the parser about one container kind."""
    names: int                      # words after the keyword that name an instance

    def child(self, keyword: str) -> Optional["Shape"]:
        """The shape of container `keyword` inside this one; None if it is a leaf/unknown."""


@dataclass(frozen=True)
class Node:
    """One statement: `keyword values... ;` (a leaf) or `keyword names... { children }`."""
    keyword: str
    values: tuple[str, ...]
    line: int = field(compare=False)
    children: tuple["Node", ...] = ()
    container: bool = False


# --- tokens ----------------------------------------------------------------------------

class Token(NamedTuple):
    kind: str          # "word", "{", "}", ";", "[", "]", "\n"
    text: str
    line: int
    quoted: bool = False


_PUNCT = "{};[]"
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}


def _char_error(filename: str, line: int, ch: str) -> ConfigError:
    return ConfigError(filename, line, f"unexpected control character U+{ord(ch):04X}")


def tokenize(text: str, filename: str = "<config>") -> Iterator[Token]:
    """Tokens with their line numbers; newlines are tokens (set lines end at them)."""
    i, n, line = 0, len(text), 1
    while i < n:
        ch = text[i]
        if ch == "\n":
            yield Token("\n", "\n", line)
            line += 1
            i += 1
        elif ch in " \t\r\f\v" or (ch.isspace() and ord(ch) >= 32):
            i += 1                  # (Unicode spaces too: a word never starts with one)
        elif ch == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ConfigError(filename, line, "unterminated comment '/*'")
            line += text.count("\n", i, end)
            i = end + 2
        elif ch in _PUNCT:
            yield Token(ch, ch, line)
            i += 1
        elif ch == '"':
            start, i, out = line, i + 1, []
            while True:
                if i >= n or text[i] == "\n":
                    raise ConfigError(filename, start, "unterminated string")
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < n and text[i + 1] != "\n":
                    out.append(_ESCAPES.get(text[i + 1], text[i + 1]))
                    i += 2
                    continue
                if ord(c) < 32 and c != "\t":
                    raise _char_error(filename, line, c)
                out.append(c)
                i += 1
            yield Token("word", "".join(out), start, True)
        elif ord(ch) < 32 or ch == "\x7f":
            raise _char_error(filename, line, ch)
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in _PUNCT + '"':
                if ord(text[i]) < 32 or text[i] == "\x7f":
                    raise _char_error(filename, line, text[i])
                i += 1
            yield Token("word", text[start:i], line)


# --- tree building ---------------------------------------------------------------------

class _Draft:
    """A container under construction (mutable; frozen into a Node at the end)."""

    def __init__(self, keyword: str, names: tuple[str, ...], line: int,
                 shape: Optional[Shape]):
        self.keyword, self.names, self.line, self.shape = keyword, names, line, shape
        self.items: list = []               # _Draft or Node (leaves), in file order
        self.index: dict[tuple, _Draft] = {}

    def container(self, keyword: str, names: tuple[str, ...], line: int,
                  shape: Optional[Shape]) -> "_Draft":
        key = (keyword, names)
        found = self.index.get(key)
        if found is None:
            found = self.index[key] = _Draft(keyword, names, line, shape)
            self.items.append(found)
        return found

    def remove(self, keyword: str, values: tuple[str, ...]) -> bool:
        before = len(self.items)
        self.items = [it for it in self.items
                      if not (_key(it) == (keyword, values) or
                              (isinstance(it, Node) and it.keyword == keyword and not values))]
        self.index = {k: v for k, v in self.index.items() if v in self.items}
        return len(self.items) != before

    def freeze(self) -> Node:
        kids = tuple(it.freeze() if isinstance(it, _Draft) else it for it in self.items)
        return Node(self.keyword, self.names, self.line, kids, True)


def _key(item) -> tuple:
    return (item.keyword, item.names) if isinstance(item, _Draft) else (item.keyword,
                                                                         item.values)


class _Words(NamedTuple):
    words: list[str]
    line: int


def _child_shape(shape: Optional[Shape], keyword: str) -> Optional[Shape]:
    return shape.child(keyword) if shape is not None else None


def _place(filename: str, parent: _Draft, words: list[str], line: int,
           has_block: bool) -> _Draft:
    """Split one statement's words into nested containers by the shape and add it under
    `parent`. Returns the innermost container (the one a following block fills)."""
    node, i = parent, 0
    while i < len(words):
        kw = words[i]
        shape = _child_shape(node.shape, kw)
        if shape is None:
            if has_block:               # unknown/leaf keyword with a block: names = the rest
                return node.container(kw, tuple(words[i + 1:]), line, None)
            node.items.append(Node(kw, tuple(words[i + 1:]), line))
            return node
        names = tuple(words[i + 1:i + 1 + shape.names])
        if len(names) < shape.names:
            raise ConfigError(filename, line, f"'{kw}' needs a name")
        node = node.container(kw, names, line, shape)
        i += 1 + shape.names
    return node


def _list_words(filename: str, tokens: list[Token], pos: int) -> tuple[list[str], int]:
    """The words of a `[ a b ]` list starting at tokens[pos] == '['."""
    start, out, pos = tokens[pos].line, [], pos + 1
    while pos < len(tokens):
        t = tokens[pos]
        if t.kind == "]":
            return out, pos + 1
        if t.kind == "word":
            out.append(t.text)
        elif t.kind != "\n":
            raise ConfigError(filename, t.line, f"unexpected '{t.text}' inside '[ ]'")
        pos += 1
    raise ConfigError(filename, start, "missing ']'")


def _is_set_form(tokens: list[Token]) -> bool:
    for t in tokens:
        if t.kind != "\n":
            return t.kind == "word" and not t.quoted and t.text in ("set", "deactivate")
    return False


def parse(text: str, filename: str = "<config>", shape: Optional[Shape] = None) -> Node:
    """The statement tree of a configuration text (root keyword ''). ConfigError on any
    syntax problem; nothing else is raised."""
    if not isinstance(text, str):
        raise ConfigError(filename, None, "configuration must be text")
    tokens = list(tokenize(text, filename))
    root = _Draft("", (), 0, shape)
    if _is_set_form(tokens):
        _parse_set(filename, tokens, root)
    else:
        _parse_curly(filename, tokens, root)
    return root.freeze()


def _keyword(word: str) -> str:
    """A word for an error message, only if it looks like a statement keyword: the words
    after a keyword may be a key, and error messages never show keys."""
    return repr(word) if re.fullmatch(r"[A-Za-z][A-Za-z0-9._:-]{0,39}", word) else "this"


def _missing_semicolon(words: list[str]) -> str:
    more = " ..." if len(words) > 1 else ""
    return f"missing ';' after the statement {_keyword(words[0])}{more}"


def _parse_curly(filename: str, tokens: list[Token], root: _Draft) -> None:
    stack: list[tuple[_Draft, int]] = [(root, 0)]      # container, line of its '{'
    words: list[str] = []
    first_line, inactive, pos = 0, False, 0
    dropped = _Draft("", (), 0, None)                  # where inactive statements go
    while pos < len(tokens):
        t = tokens[pos]
        if t.kind == "word":
            if not words and not t.quoted and t.text in ("inactive:", "protect:"):
                inactive = inactive or t.text == "inactive:"
                pos += 1
                continue
            if not words:
                first_line = t.line
                if len(stack) == 1 and not t.quoted and t.text == "set":
                    raise ConfigError(filename, t.line, "'set' line in a curly-brace file "
                                      "(a file is either set lines or braces)")
            words.append(t.text)
            pos += 1
        elif t.kind == "[":
            if not words:
                raise ConfigError(filename, t.line, "'[' without a statement name")
            items, pos = _list_words(filename, tokens, pos)
            words.extend(items)
        elif t.kind == "]":
            raise ConfigError(filename, t.line, "unexpected ']'")
        elif t.kind == ";":
            if not words:
                raise ConfigError(filename, t.line, "unexpected ';'")
            _place(filename, dropped if inactive else stack[-1][0], words, first_line, False)
            words, inactive = [], False
            pos += 1
        elif t.kind == "{":
            if not words:
                raise ConfigError(filename, t.line, "'{' without a statement name")
            if len(stack) > MAX_DEPTH:
                raise ConfigError(filename, t.line, f"nesting deeper than {MAX_DEPTH}")
            parent = dropped if inactive else stack[-1][0]
            stack.append((_place(filename, parent, words, first_line, True), t.line))
            # Everything inside an inactive block is dropped with it.
            words, inactive = [], False
            pos += 1
        elif t.kind == "}":
            if words:
                raise ConfigError(filename, first_line, _missing_semicolon(words))
            if len(stack) == 1:
                raise ConfigError(filename, t.line, "unexpected '}'")
            stack.pop()
            pos += 1
        else:   # newline: statements may span lines in the curly form
            pos += 1
    if words:
        raise ConfigError(filename, first_line, _missing_semicolon(words))
    if len(stack) > 1:
        raise ConfigError(filename, stack[-1][1], "missing '}' for the '{' on this line")


def _set_lines(filename: str, tokens: list[Token]) -> Iterator[_Words]:
    words: list[str] = []
    line, pos = 0, 0
    while pos < len(tokens):
        t = tokens[pos]
        if t.kind == "\n":
            if words:
                yield _Words(words, line)
            words = []
            pos += 1
        elif t.kind == "word":
            if not words:
                line = t.line
            words.append(t.text)
            pos += 1
        elif t.kind == "[":
            if not words:
                raise ConfigError(filename, t.line, "'[' without a statement name")
            items, pos = _list_words(filename, tokens, pos)
            words.extend(items)
        else:
            raise ConfigError(filename, t.line,
                              f"unexpected '{t.text}' in a set-form file (one statement a line)")
    if words:
        yield _Words(words, line)


def _parse_set(filename: str, tokens: list[Token], root: _Draft) -> None:
    deactivated: list[_Words] = []
    for words, line in _set_lines(filename, tokens):
        verb = words[0]
        if verb not in ("set", "deactivate"):
            raise ConfigError(filename, line, f"expected a 'set' line, not {_keyword(verb)} "
                              "(a file is either set lines or braces)")
        if len(words) == 1:
            raise ConfigError(filename, line, f"nothing after '{verb}'")
        if verb == "set":
            _place(filename, root, words[1:], line, False)
        else:
            deactivated.append(_Words(words[1:], line))
    for words, line in deactivated:
        _deactivate(filename, root, words, line)


def _deactivate(filename: str, root: _Draft, words: list[str], line: int) -> None:
    node, i = root, 0
    while i < len(words):
        kw = words[i]
        shape = _child_shape(node.shape, kw)
        names = tuple(words[i + 1:i + 1 + shape.names]) if shape is not None \
            else tuple(words[i + 1:])
        if shape is None or i + 1 + shape.names >= len(words):
            if not node.remove(kw, names):
                raise ConfigError(filename, line, "'deactivate' names a statement that is "
                                  "not configured")
            return
        found = node.index.get((kw, names))
        if found is None:
            raise ConfigError(filename, line, "'deactivate' names a statement that is not "
                              "configured")
        node, i = found, i + 1 + shape.names
