"""Text from a database is data in every output: control characters shown, never obeyed.

Object names and values are chosen by whoever can write to the database (in a multi-tenant or compromised one, an
attacker). ESC, carriage return and BEL are legal in identifiers: printed raw, ``t\\x1b[2K\\rbackup test PASSED``
erases a line of a DBA's terminal and prints a verdict of its own. :func:`visible` writes every control character
(C0, DEL, C1) as a Python-style escape, keeping only newline and tab, so the text reads as what it is.
HTML is escaped where HTML is written (Jinja2's autoescape; reports/plugin.py for pytest-html's own cells).
"""

from __future__ import annotations

import html
import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_NAMED = {"\r": "\\r", "\x0b": "\\v", "\x0c": "\\f"}


def visible(text: str) -> str:
    """``text`` with every control character but newline and tab written as an escape (``\\x1b``, ``\\r``)."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


def one_line(text: str) -> str:
    """``text`` for one line of a table (Markdown, a terminal column): newlines and tabs too, and ``|`` escaped."""
    return visible(text).replace("\n", "\\n").replace("\t", "\\t").replace("|", "\\|")


def md_cell(value: object) -> str:
    """A value for a Markdown table cell: one line, ``|`` escaped, and markup shown as text (``&lt;script&gt;``);
    what is not known is a dash (never Python's None)."""
    return "—" if value is None else html.escape(one_line(str(value)), quote=False)
