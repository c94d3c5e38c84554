"""Bounds on what reading an untrusted table may cost, checked before and while it is read.

`TableLimits` says how many rows a table may have, how many bytes it may inflate to, and how
many bytes of JSONL a conversion may write; `check_table` looks at an XLSX's zip directory
(each member's uncompressed size, each sheet's declared row count) and a Parquet file's metadata (row count, uncompressed row
group sizes) before either is opened by openpyxl or pyarrow, so a small file that inflates to
gigabytes is refused without being read. Every refusal is a `PayloadTooLarge` whose message
names the limit and the setting that sets it (`setting` in `TableLimits.settings`).

Knows nothing about HTTP or processes; the memory and time bounds are `openft.data.isolated`'s.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from openft.errors import PayloadTooLarge

_DIMENSION = re.compile(rb'<(?:\w+:)?dimension\s+ref="[A-Z]+\d+:[A-Z]+(\d{1,9})"')


@dataclass(frozen=True)
class TableLimits:
    max_rows: int                 # data rows (the header not counted)
    max_expanded_bytes: int       # uncompressed size of the table's content
    max_output_bytes: int         # JSONL a conversion may write
    # the names the operator knows these limits by (environment variables), for the messages
    rows_setting: str = "OPENFT_DATA_TOOLS_MAX_ROWS"
    expanded_setting: str = "OPENFT_DATA_TOOLS_MAX_EXPANDED_BYTES"
    output_setting: str = "OPENFT_MAX_UPLOAD_BYTES"

    def rows(self, n: int, name: str) -> None:
        """Raise once a table is found to have more than `max_rows` data rows."""
        if n > self.max_rows:
            raise PayloadTooLarge(f"{name} has more than {self.max_rows} rows, the most the data tools read "
                                  f"({self.rows_setting}).", param="file", code="too_many_rows")

    def output(self, n_bytes: int, name: str) -> None:
        """Raise once a conversion has written more than `max_output_bytes`."""
        if n_bytes > self.max_output_bytes:
            raise PayloadTooLarge(f"the JSONL made from {name} would be larger than {self.max_output_bytes} bytes, "
                                  f"the upload limit ({self.output_setting}).", param="file",
                                  code="output_too_large")

    def expanded(self, n_bytes: int, what: str, name: str) -> None:
        if n_bytes > self.max_expanded_bytes:
            raise PayloadTooLarge(f"{name}: {what} inflates to {n_bytes} bytes; the data tools read at most "
                                  f"{self.max_expanded_bytes} ({self.expanded_setting}).", param="file",
                                  code="table_too_large")


def check_table(path: str | Path, kind: str, limits: TableLimits, name: str) -> None:
    """Refuse a table whose declared size is beyond `limits`, before anything reads its content."""
    if kind == "xlsx":
        _check_xlsx(path, limits, name)
    elif kind == "parquet":
        _check_parquet(path, limits, name)


def _check_xlsx(path, limits: TableLimits, name: str) -> None:
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a zip: the reader says so in its own words
    # zipfile never inflates a member past its declared file_size, so these are real bounds
    for m in members:
        limits.expanded(m.file_size, f"the workbook part {m.filename}", name)
    limits.expanded(sum(m.file_size for m in members), "the workbook", name)
    with zipfile.ZipFile(path) as z:  # each sheet's declared size (<dimension ref="A1:D3000001"/>)
        for m in members:
            if m.filename.startswith("xl/worksheets/") and m.filename.endswith(".xml"):
                with z.open(m) as f:
                    found = _DIMENSION.search(f.read(4096))
                if found:
                    limits.rows(int(found.group(1)) - 1, name)  # the header is row 1


def _check_parquet(path, limits: TableLimits, name: str) -> None:
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception:  # pyarrow.ArrowInvalid and friends: the reader says what is wrong
        return
    limits.rows(meta.num_rows, name)
    size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    limits.expanded(size, "the table (uncompressed row groups)", name)
