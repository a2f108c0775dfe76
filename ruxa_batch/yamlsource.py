"""Reading YAML safely, keeping the line and column of every value.

PyYAML's parser (the safe one, libyaml when available) yields a flat stream of events with source
marks; this module builds plain Python values from that stream itself, in one pass, so that it can:

- remember where each value and each mapping key stands, for error messages that point at lines;
- refuse duplicate keys, which PyYAML silently lets the last one win;
- refuse alias bombs and absurd nesting before building anything large (aliases share values,
  and their expanded size is counted, not materialised);
- resolve plain scalars by the YAML 1.2 core schema, so ``16:9`` stays a string (YAML 1.1 reads it
  as the base-60 integer 969) and ``on``/``no`` stay strings instead of booleans.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ruxa_batch.errors import Problem

MAX_FILE_BYTES = 10 * 1024 * 1024
# Upper bound on the number of nodes after aliases are expanded. A 10 MB manifest written by hand
# has far fewer; a "billion laughs" document has 10**9 and is refused before any expansion.
MAX_EXPANDED_NODES = 2_000_000
# No manifest needs more; a document nested thousands deep is refused instead of recursed into.
MAX_DEPTH = 64

PathKey = tuple[str | int, ...]


class _PlainLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader with YAML 1.1 implicit typing switched off: we resolve scalars ourselves."""

    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012 - class attribute by design


_Loader: type[Any] = _PlainLoader

_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL_TRUE = re.compile(r"^(?:true|True|TRUE)$")
_BOOL_FALSE = re.compile(r"^(?:false|False|FALSE)$")
_INT = re.compile(r"^[-+]?[0-9]+$")
_INT_OCT = re.compile(r"^0o[0-7]+$")
_INT_HEX = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")

_STR_TAG = "tag:yaml.org,2002:str"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"
_SCALAR_TAGS = {
    _STR_TAG,
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}


@dataclass
class Document:
    """A parsed YAML file: plain data plus where each piece of it came from."""

    file: str
    data: Any
    value_marks: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    # Where an alias was used -> where its anchored value stands; marks are kept only there.
    aliases: dict[PathKey, PathKey] = field(default_factory=dict)

    def resolve(self, path: PathKey) -> PathKey:
        """``path`` with any alias prefix replaced by the anchored value's own path."""
        for _ in range(MAX_DEPTH):
            for cut in range(len(path), 0, -1):
                target = self.aliases.get(path[:cut])
                if target is not None:
                    path = (*target, *path[cut:])
                    break
            else:
                return path
        return path

    def locate(self, path: PathKey, *, key: bool = False) -> tuple[int, int]:
        """1-based (line, col) of the value (or key) at ``path``, else of its nearest parent."""
        marks = self.key_marks if key else self.value_marks
        if path in marks:
            return marks[path]
        if self.aliases:
            path = self.resolve(path)
            if path in marks:
                return marks[path]
        probe = path
        while probe:
            probe = probe[:-1]
            if probe in self.value_marks:
                return self.value_marks[probe]
        return (1, 1)

    def problem(self, path: PathKey, message: str, *, key: bool = False) -> Problem:
        """A :class:`Problem` located at ``path`` in this document."""
        line, col = self.locate(path, key=key)
        return Problem(self.file, line, col, json_path(path), message)


def json_path(path: PathKey) -> str:
    """Render a path tuple as ``$.jobs[0].prompt``."""
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            out += f".{part}"
        else:
            out += "[" + repr(part) + "]"
    return out


class YamlProblem(Exception):
    """Raised internally when a document cannot be turned into data at all."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def read_text(path: Path, *, display: str, what: str = "file") -> str:
    """Read a UTF-8 text file with the size and binary checks every input gets.

    Raises :class:`YamlProblem` (located at the file, line 0) when the file cannot be used.
    """

    def fail(message: str, line: int = 0) -> YamlProblem:
        return YamlProblem(Problem(display, line, 1 if line else 0, "$", message))

    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise fail(f"{what} not found") from None
    except IsADirectoryError:
        raise fail(f"is a directory, not a {what}") from None
    except PermissionError:
        raise fail(f"cannot read {what}: permission denied") from None
    except OSError as exc:
        raise fail(f"cannot read {what}: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise fail(
            f"{what} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB; refusing to read it"
        )
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise fail(f"{what} contains binary data (a NUL byte); expected UTF-8 text", line)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise fail(f"{what} is not valid UTF-8 text (byte 0x{raw[exc.start]:02x})", line) from None
    return text


def load_yaml(path: Path, *, display: str | None = None) -> Document:
    """Read and parse one YAML file; raises :class:`YamlProblem` with a located message."""
    shown = display if display is not None else str(path)
    text = read_text(path, display=shown, what="file")
    return parse_yaml(text, display=shown)


def parse_yaml(text: str, *, display: str) -> Document:
    """Parse YAML text (one document) into a :class:`Document`."""
    doc = Document(display, None)
    builder = _Builder(doc)
    try:
        for event in yaml.parse(text, Loader=_Loader):
            builder.feed(event)
    except yaml.MarkedYAMLError as exc:
        raise YamlProblem(_syntax_problem(exc, text, display)) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(Problem(display, 0, 0, "$", f"invalid YAML: {exc}")) from None
    if not builder.done:
        raise YamlProblem(Problem(display, 1, 1, "$", "the file is empty; expected a manifest"))
    doc.data = builder.root
    return doc


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str, display: str) -> Problem:
    mark: Any = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 0
    col = mark.column + 1 if mark is not None else 0
    problem = (exc.problem or "invalid YAML").strip()
    if mark is not None:
        lines = text.splitlines()
        current = lines[mark.line] if mark.line < len(lines) else ""
        if "\t" in current[: mark.column + 1] or "'\\t'" in problem:
            tab_col = current.find("\t")
            return Problem(
                display,
                line,
                tab_col + 1 if tab_col >= 0 else col,
                "$",
                "YAML syntax error: a tab character is used for indentation; YAML needs spaces",
            )
    if "expected a single document" in (exc.context or "") + problem:
        return Problem(display, line, col, "$", "expected one YAML document, found more than one")
    context = ""
    if exc.context:
        started = exc.context_mark
        since = (
            f" that starts on line {started.line + 1}"
            if started is not None and started.line + 1 != line
            else ""
        )
        context = f" ({exc.context.strip()}{since})"
    return Problem(display, line, col, "$", f"YAML syntax error: {problem}{context}")


@dataclass
class _Frame:
    """A collection being built."""

    path: PathKey
    value: Any  # list or dict
    anchor: str | None
    size: int = 1
    key: str | None = None  # mapping: the key whose value comes next
    key_is_merge: bool = False
    merges: list[tuple[dict[str, Any], PathKey]] = field(default_factory=list)


@dataclass(frozen=True)
class _Anchor:
    value: Any
    size: int
    path: PathKey


class _Builder:
    """Builds plain data from the parser's event stream in one pass, recording marks.

    Working on events (not on PyYAML's node graph) keeps the nesting check, the alias-bomb check
    and the construction in a single pass with no recursion.
    """

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.stack: list[_Frame] = []
        self.anchors: dict[str, _Anchor] = {}
        self.open_anchors: set[str] = set()
        self.total = 0
        self.root: Any = None
        self.done = False
        self.documents = 0

    def fail(self, event: Any, message: str, path: PathKey = ()) -> YamlProblem:
        mark = event.start_mark
        return YamlProblem(
            Problem(self.doc.file, mark.line + 1, mark.column + 1, json_path(path), message)
        )

    def mark(self, path: PathKey, mark: tuple[int, int], *, key: bool = False) -> None:
        (self.doc.key_marks if key else self.doc.value_marks)[path] = mark

    def feed(self, event: Any) -> None:
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise self.fail(event, "expected one YAML document, found more than one")
        elif isinstance(event, yaml.ScalarEvent):
            self.scalar(event)
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            self.start(event)
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            self.end()
        elif isinstance(event, yaml.AliasEvent):
            self.alias(event)

    def child_path(self, event: Any) -> PathKey:
        if not self.stack:
            return ()
        frame = self.stack[-1]
        if isinstance(frame.value, list):
            return (*frame.path, len(frame.value))
        if frame.key is None:
            return frame.path  # a key is being read
        return (*frame.path, "<<") if frame.key_is_merge else (*frame.path, frame.key)

    def start(self, event: Any) -> None:
        frame = self.stack[-1] if self.stack else None
        if frame is not None and isinstance(frame.value, dict) and frame.key is None:
            raise self.fail(event, "mapping keys must be plain strings", frame.path)
        is_seq = isinstance(event, yaml.SequenceStartEvent)
        if event.tag is not None and event.tag not in (_SEQ_TAG if is_seq else _MAP_TAG, "!"):
            raise self.fail(event, f"unsupported YAML tag {event.tag!r}", self.child_path(event))
        if len(self.stack) >= MAX_DEPTH:
            raise self.fail(
                event, f"YAML nesting is deeper than {MAX_DEPTH} levels; refusing to load"
            )
        path = self.child_path(event)
        mark = event.start_mark
        self.mark(path, (mark.line + 1, mark.column + 1))
        if event.anchor:
            self.open_anchors.add(event.anchor)
        self.stack.append(_Frame(path, [] if is_seq else {}, event.anchor))

    def end(self) -> None:
        frame = self.stack.pop()
        if isinstance(frame.value, dict):
            # Explicit keys win over merged ones; earlier merge sources win over later ones.
            for source, source_path in frame.merges:
                for key, value in source.items():
                    if key not in frame.value:
                        frame.value[key] = value
                        here = (*frame.path, key)
                        self.doc.aliases[here] = (*source_path, key)
        if frame.anchor:
            self.remember(frame.anchor, frame.value, frame.size, frame.path)
        self.attach(frame.value, frame.size, None)

    def remember(self, name: str, value: Any, size: int, path: PathKey) -> None:
        self.anchors[name] = _Anchor(value, size, path)
        self.open_anchors.discard(name)

    def scalar(self, event: Any) -> None:
        path = self.child_path(event)
        frame = self.stack[-1] if self.stack else None
        mark = (event.start_mark.line + 1, event.start_mark.column + 1)
        if frame is not None and isinstance(frame.value, dict) and frame.key is None:
            self.key(frame, event, mark)
            return
        self.mark(path, mark)
        value = self.scalar_value(event, path)
        if event.anchor:
            self.remember(event.anchor, value, 1, path)
        self.attach(value, 1, event)

    def key(self, frame: _Frame, event: Any, mark: tuple[int, int]) -> None:
        key = str(event.value)
        if event.tag not in (None, _STR_TAG, "!"):
            raise self.fail(event, "mapping keys must be plain strings", frame.path)
        if key == "<<" and not event.style:
            frame.key, frame.key_is_merge = key, True
            return
        here = (*frame.path, key)
        if key in frame.value:
            first = self.doc.key_marks[here]
            raise self.fail(
                event, f"duplicate key {key!r} (first defined on line {first[0]})", here
            )
        self.mark(here, mark, key=True)
        frame.key, frame.key_is_merge = key, False

    def alias(self, event: Any) -> None:
        name = event.anchor
        path = self.child_path(event)
        if name in self.open_anchors:
            raise self.fail(event, "recursive YAML alias: a node refers to itself", path)
        if name not in self.anchors:
            raise self.fail(event, f"undefined YAML alias *{name}", path)
        frame = self.stack[-1] if self.stack else None
        if frame is not None and isinstance(frame.value, dict) and frame.key is None:
            raise self.fail(event, "mapping keys must be plain strings", frame.path)
        anchor = self.anchors[name]
        self.total += anchor.size
        if self.total > MAX_EXPANDED_NODES:
            raise self.fail(
                event,
                "YAML aliases expand to more than "
                f"{MAX_EXPANDED_NODES:,} values (an alias bomb?); refusing to load",
            )
        self.mark(path, (event.start_mark.line + 1, event.start_mark.column + 1))
        self.doc.aliases[path] = anchor.path
        self.attach(anchor.value, anchor.size, event)

    def attach(self, value: Any, size: int, event: Any) -> None:
        if not self.stack:
            self.root, self.done = value, True
            return
        frame = self.stack[-1]
        frame.size += size
        if isinstance(frame.value, list):
            frame.value.append(value)
            return
        if frame.key_is_merge:
            merge_path = self.doc.resolve((*frame.path, "<<"))
            if isinstance(value, dict):
                frame.merges.append((value, merge_path))
            elif isinstance(value, list) and all(isinstance(item, dict) for item in value):
                frame.merges.extend(
                    (item, self.doc.resolve((*merge_path, index)))
                    for index, item in enumerate(value)
                )
            else:
                raise self.fail(event, "a merge key (<<) needs a mapping or a list of mappings")
        else:
            assert frame.key is not None
            frame.value[frame.key] = value
        frame.key, frame.key_is_merge = None, False

    def scalar_value(self, event: Any, path: PathKey) -> Any:
        value: str = event.value
        tag = event.tag
        if tag is None or tag == "!":
            # Implicit typing is off: resolve plain scalars by the YAML 1.2 core schema ourselves;
            # quoted ones are strings.
            return value if event.style else resolve_plain(value)
        if tag not in _SCALAR_TAGS:
            raise self.fail(event, f"unsupported YAML tag {tag!r}", path)
        if tag == _STR_TAG:
            return value
        resolved: Any = resolve_plain(value)
        expected = tag.rsplit(":", 1)[-1]
        kinds: dict[str, type | tuple[type, ...]] = {
            "int": int,
            "float": (int, float),
            "bool": bool,
            "null": type(None),
        }
        if not isinstance(resolved, kinds[expected]) or (
            expected == "int" and isinstance(resolved, bool)
        ):
            raise self.fail(event, f"{value!r} is not a valid !!{expected}", path)
        if expected == "float":
            return float(value) if _FLOAT.match(value) or _INT.match(value) else resolved
        return resolved


def resolve_plain(value: str) -> Any:
    """Resolve a plain (unquoted) scalar by the YAML 1.2 core schema."""
    if _NULL.match(value):
        return None
    if _BOOL_TRUE.match(value):
        return True
    if _BOOL_FALSE.match(value):
        return False
    if _INT.match(value):
        return int(value)
    if _INT_OCT.match(value):
        return int(value[2:], 8)
    if _INT_HEX.match(value):
        return int(value[2:], 16)
    if _FLOAT.match(value):
        return float(value)
    if _INF.match(value):
        return -math.inf if value.startswith("-") else math.inf
    if _NAN.match(value):
        return math.nan
    return value
