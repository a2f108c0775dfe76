"""Reading YAML safely, keeping the line and column of every value.

PyYAML's composer (safe, no object construction) builds a node graph with source marks; this
module turns that graph into plain Python values itself, so that it can:

- remember where each value and each mapping key stands, for error messages that point at lines;
- refuse duplicate keys, which PyYAML silently lets the last one win;
- refuse alias bombs before expanding anything (the expanded size is computed on the graph);
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
# libyaml's composer recurses on the C stack; a document nested thousands deep would crash the
# process, so nesting is measured on the (flat) event stream first.
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
_MERGE_TAG = "tag:yaml.org,2002:merge"
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

    def locate(self, path: PathKey, *, key: bool = False) -> tuple[int, int]:
        """1-based (line, col) of the value (or key) at ``path``, else of its nearest parent."""
        marks = self.key_marks if key else self.value_marks
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
    try:
        _check_depth(text, display)
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        raise YamlProblem(_syntax_problem(exc, text, display)) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(Problem(display, 0, 0, "$", f"invalid YAML: {exc}")) from None
    except RecursionError:
        raise YamlProblem(Problem(display, 0, 0, "$", "YAML nesting is too deep")) from None
    doc = Document(display, None)
    if node is None:
        raise YamlProblem(Problem(display, 1, 1, "$", "the file is empty; expected a manifest"))
    builder = _Builder(doc)
    try:
        builder.check_size(node)
        doc.data = builder.build(node, ())
    except RecursionError:
        raise YamlProblem(Problem(display, 0, 0, "$", "YAML nesting is too deep")) from None
    return doc


def _check_depth(text: str, display: str) -> None:
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark: Any = event.start_mark
                raise YamlProblem(
                    Problem(
                        display,
                        mark.line + 1,
                        mark.column + 1,
                        "$",
                        f"YAML nesting is deeper than {MAX_DEPTH} levels; refusing to load",
                    )
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


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


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.sizes: dict[int, int] = {}

    def fail(self, node: yaml.Node, message: str, path: PathKey = ()) -> YamlProblem:
        mark = node.start_mark
        return YamlProblem(
            Problem(self.doc.file, mark.line + 1, mark.column + 1, json_path(path), message)
        )

    def check_size(self, root: yaml.Node) -> None:
        """Refuse documents whose alias expansion would be huge, without expanding them."""
        active: set[int] = set()

        def size(node: yaml.Node) -> int:
            key = id(node)
            if key in self.sizes:
                return self.sizes[key]
            if key in active:
                raise self.fail(node, "recursive YAML alias: a node refers to itself")
            active.add(key)
            total = 1
            if isinstance(node, yaml.SequenceNode):
                for item in node.value:
                    total += size(item)
                    if total > MAX_EXPANDED_NODES:
                        break
            elif isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    total += size(key_node) + size(value_node)
                    if total > MAX_EXPANDED_NODES:
                        break
            active.discard(key)
            self.sizes[key] = total
            return total

        if size(root) > MAX_EXPANDED_NODES:
            raise self.fail(
                root,
                "YAML aliases expand to more than "
                f"{MAX_EXPANDED_NODES:,} values (an alias bomb?); refusing to load",
            )

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        mark = node.start_mark
        self.doc.value_marks[path] = (mark.line + 1, mark.column + 1)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                raise self.fail(node, f"unsupported YAML tag {node.tag!r}", path)
            return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP_TAG:
                raise self.fail(node, f"unsupported YAML tag {node.tag!r}", path)
            return self.mapping(node, path)
        raise self.fail(node, "unsupported YAML node", path)  # pragma: no cover

    def mapping(self, node: yaml.MappingNode, path: PathKey) -> dict[str, Any]:
        result: dict[str, Any] = {}
        merges: list[yaml.MappingNode] = []
        for key_node, value_node in node.value:
            if (
                isinstance(key_node, yaml.ScalarNode)
                and not key_node.style
                and key_node.value == "<<"
            ) or key_node.tag == _MERGE_TAG:
                merges.extend(self.merge_sources(value_node, path))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, "mapping keys must be plain strings", path)
            key = str(key_node.value)
            here = (*path, key)
            if key in result:
                first = self.doc.key_marks[here]
                raise self.fail(
                    key_node, f"duplicate key {key!r} (first defined on line {first[0]})", here
                )
            mark = key_node.start_mark
            self.doc.key_marks[here] = (mark.line + 1, mark.column + 1)
            result[key] = self.build(value_node, here)
        # Explicit keys win over merged ones; earlier merge sources win over later ones.
        for source in merges:
            for key_node, value_node in source.value:
                key = str(key_node.value)
                if key not in result:
                    here = (*path, key)
                    mark = key_node.start_mark
                    self.doc.key_marks[here] = (mark.line + 1, mark.column + 1)
                    result[key] = self.build(value_node, here)
        return result

    def merge_sources(self, node: yaml.Node, path: PathKey) -> list[yaml.MappingNode]:
        if isinstance(node, yaml.MappingNode):
            return [node]
        if isinstance(node, yaml.SequenceNode) and all(
            isinstance(item, yaml.MappingNode) for item in node.value
        ):
            return list(node.value)
        raise self.fail(node, "a merge key (<<) needs a mapping or a list of mappings", path)

    def scalar(self, node: yaml.ScalarNode, path: PathKey) -> Any:
        value: str = node.value
        if node.tag not in _SCALAR_TAGS:
            raise self.fail(node, f"unsupported YAML tag {node.tag!r}", path)
        if node.tag == _STR_TAG:
            # Implicit typing is off, so every untagged scalar arrives here as a string.
            # (The C parser reports plain style as "", the Python one as None.)
            return value if node.style else resolve_plain(value)
        resolved: Any = resolve_plain(value)
        expected = node.tag.rsplit(":", 1)[-1]
        kinds: dict[str, type | tuple[type, ...]] = {
            "int": int,
            "float": (int, float),
            "bool": bool,
            "null": type(None),
        }
        if not isinstance(resolved, kinds[expected]) or (
            expected == "int" and isinstance(resolved, bool)
        ):
            raise self.fail(node, f"{value!r} is not a valid !!{expected}", path)
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
