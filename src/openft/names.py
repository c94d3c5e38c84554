"""User-supplied names as openft stores and shows them: without Unicode bidirectional controls.

A file name such as `invoice\u202egpj.exe` displays as `invoiceexe.jpg`: the right-to-left
override (U+202E) and the other explicit direction controls (U+202A-U+202E embeddings and
overrides, U+2066-U+2069 isolates, U+200E/U+200F marks) reorder what a reader sees. They carry
no meaning a file name needs, so `plain` drops them; the API stores file names through it and
shows them through it (rows stored before), and the CLI prints every table cell through it (the
dashboard's `h()` does the same in JavaScript). Knows nothing about HTTP or the database.
"""

from __future__ import annotations

import re

BIDI_CONTROLS = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_BIDI = re.compile(f"[{BIDI_CONTROLS}]")


def plain(text: str | None) -> str | None:
    """`text` without bidirectional control characters (None stays None)."""
    return None if text is None else _BIDI.sub("", text)
