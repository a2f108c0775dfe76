"""``{name}`` templates as used in manifest job fields and ``output.filename``.

``{name}`` is replaced by a variable's value; ``{{`` and ``}}`` stand for literal braces. Anything
else with a brace is an error, so a typo such as ``{sku`` is caught instead of sent to the API.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")
_SLUG_DROP = re.compile(r"[^a-z0-9]+")


class TemplateError(ValueError):
    """A template that cannot be parsed; the message says what to change."""


@dataclass(frozen=True)
class Template:
    """A parsed template: literal text and variable names, in order."""

    source: str
    parts: tuple[tuple[bool, str], ...]  # (is_variable, text or name)

    @functools.cached_property
    def names(self) -> frozenset[str]:
        """Every variable name the template uses."""
        return frozenset(text for is_var, text in self.parts if is_var)

    @property
    def is_literal(self) -> bool:
        """True when the template has no placeholders."""
        return not any(is_var for is_var, _ in self.parts)

    @functools.cached_property
    def _format(self) -> str:
        # The template as a str.format string: variable names are identifiers, so format_map
        # substitutes exactly them, in C (a 100,000-job manifest renders 600,000 templates).
        return "".join(
            "{" + text + "}" if is_var else text.replace("{", "{{").replace("}", "}}")
            for is_var, text in self.parts
        )

    def render(
        self, values: Mapping[str, str], *, transform: Callable[[str], str] | None = None
    ) -> str:
        """Substitute ``values`` (optionally transformed, e.g. slugified)."""
        if transform is not None:
            values = {name: transform(values[name]) for name in self.names}
        return self._format.format_map(values)


@functools.lru_cache(maxsize=1024)
def parse_template(source: str) -> Template:
    """Parse ``source``; raises :class:`TemplateError` for unbalanced or malformed braces.

    Cached: file name templates are rendered once per job and output, also on every resume.
    """
    parts: list[tuple[bool, str]] = []
    literal: list[str] = []
    position = 0
    for match in _TOKEN.finditer(source):
        literal.append(source[position : match.start()])
        token = match.group(0)
        if token == "{{":
            literal.append("{")
        elif token == "}}":
            literal.append("}")
        elif match.group(1):
            text = "".join(literal)
            if text:
                parts.append((False, text))
            literal = []
            parts.append((True, match.group(1)))
        elif token == "{":
            rest = source[match.start() :]
            inner = re.match(r"\{([^{}]*)\}", rest)
            if inner:
                raise TemplateError(
                    f"invalid placeholder {inner.group(0)!r}: use {{name}} with letters, digits "
                    "and _ (write {{ and }} for literal braces)"
                )
            raise TemplateError("unbalanced '{': write {{ for a literal brace")
        else:
            raise TemplateError("unbalanced '}': write }} for a literal brace")
        position = match.end()
    literal.append(source[position:])
    tail = "".join(literal)
    if tail:
        parts.append((False, tail))
    return Template(source, tuple(parts))


def slugify(value: str) -> str:
    """Lowercase, every run of other characters turned into one '-', no '-' at the ends."""
    return _SLUG_DROP.sub("-", value.lower()).strip("-")
