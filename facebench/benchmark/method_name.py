"""The one rule for method names, and how they are written into CSV cells.

Method names come from strangers (a submission's ``method`` attribute or manifest key, the
``--method`` option, a results folder's ``summary.json``) and end up in terminals, CSV files opened
by spreadsheets, and HTML pages. One rule, applied by ``submission validate``, ``score``,
``leaderboard build``/upsert and the scoring service alike, so that a name ``validate`` accepts is
never refused later:

- a ``str`` (bytes must be valid UTF-8; a lone surrogate is refused),
- trimmed of leading/trailing whitespace (the trimmed name is the name),
- 1 to :data:`MAX_LENGTH` characters after trimming,
- every character printable: no control characters (C0, DEL, C1), no format characters (bidi
  overrides, zero-width joiners...), no unassigned, private-use, surrogate or line/paragraph
  separator code points. Spaces inside the name are allowed; other Unicode separators are not.

:func:`check_method_name` returns the normalized name or raises :class:`InvalidMethodName` (an
:class:`~facebench.errors.InvalidInputError`: exit 2 on the command line). Spreadsheet formula
injection (OWASP, "CSV Injection") is handled where CSV is written, not by refusing names:
:func:`csv_safe` prefixes a cell starting with ``=``, ``+``, ``-``, ``@``, tab or carriage
return with a single quote, and the writer quotes every cell that needs it (``csv.QUOTE_MINIMAL``
via pandas/csv). Readers of facebench's own CSV get the name back with :func:`csv_unescape`.
HTML output escapes every string (``html.escape``).
"""

from __future__ import annotations

import unicodedata

from facebench.errors import InvalidInputError

__all__ = ["MAX_LENGTH", "InvalidMethodName", "check_method_name", "method_name_problem", "csv_safe",
           "csv_unescape", "FORMULA_PREFIXES"]

#: Longest method name accepted (characters, after trimming).
MAX_LENGTH = 100
#: Leading characters a spreadsheet may read as the start of a formula (OWASP CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
#: Unicode general categories refused anywhere in a name: control, format, surrogate, private use,
#: unassigned, line and paragraph separators.
_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


class InvalidMethodName(InvalidInputError):
    """A method name that breaks the rule of this module; the message says which part."""


def method_name_problem(name) -> str | None:
    """Why ``name`` is not an acceptable method name (one phrase), or None when it is.

    ``name`` may be ``str`` or ``bytes`` (decoded as UTF-8); it is judged after trimming."""
    if isinstance(name, bytes):
        try:
            name = name.decode("utf-8")
        except UnicodeDecodeError:
            return "is not valid UTF-8"
    if not isinstance(name, str):
        return f"is not text (got {type(name).__name__})"
    name = name.strip()
    if not name:
        return "is empty or only whitespace"
    if len(name) > MAX_LENGTH:
        return f"has {len(name)} characters, more than {MAX_LENGTH}"
    for position, char in enumerate(name):
        category = unicodedata.category(char)
        if category in _REFUSED_CATEGORIES or (category == "Zs" and char != " "):
            kind = {"Cc": "a control character", "Cf": "an invisible format character",
                    "Cs": "a lone surrogate", "Co": "a private-use character", "Cn": "an unassigned code point",
                    }.get(category, "a separator other than the space")
            return f"holds {kind} (U+{ord(char):04X} at position {position})"
    return None


def check_method_name(name, *, where: str = "method name") -> str:
    """The trimmed name, or :class:`InvalidMethodName` ``"<where> <problem>: <name repr>"``."""
    problem = method_name_problem(name)
    if problem is not None:
        shown = repr(name if len(name) <= 40 else name[:40] + "…") if isinstance(name, (str, bytes)) else ""
        raise InvalidMethodName(f"{where} {problem}{': ' + shown if shown else ''} (a method name is 1–{MAX_LENGTH} "
                                "printable characters, trimmed)")
    if isinstance(name, bytes):
        name = name.decode("utf-8")
    return name.strip()


def csv_safe(value):
    """``value`` made safe for a spreadsheet cell: a string starting with a formula character
    (:data:`FORMULA_PREFIXES`) gets a leading ``'``, as OWASP recommends, and so does one that
    already starts with ``'`` (so :func:`csv_unescape` is exact); other values unchanged. Quoting
    (commas, quotes, newlines) is the CSV writer's job."""
    if isinstance(value, str) and value.startswith((*FORMULA_PREFIXES, "'")):
        return "'" + value
    return value


def csv_unescape(value):
    """Undo :func:`csv_safe` when reading facebench's own CSV back."""
    if isinstance(value, str) and value.startswith("'"):
        return value[1:]
    return value
