"""XLSX workbooks with openpyxl (read-only, cached values, not formulas), after the ZIP bomb check:
one page per sheet, its name as a heading and its cells as a Markdown table."""

from __future__ import annotations

import io

from services.contracts import RejectReason
from services.normalizer.extract import Extracted, Rejection
from services.normalizer.extract.tables import markdown_table
from services.normalizer.extract.zipped import check_zip

MAX_CELLS = 2_000_000  # read, across all sheets: a sheet's declared size can be anything


def extract(data: bytes) -> Extracted:
    import openpyxl

    check_zip(data, "XLSX")
    try:
        workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds on malformed parts
        raise Rejection(RejectReason.CORRUPT, f"the XLSX cannot be read ({type(exc).__name__}: {exc})") from None
    pages, cells = [], 0
    try:
        for sheet in workbook.worksheets:
            rows = []
            for row in sheet.iter_rows(values_only=True):
                cells += len(row)
                if cells > MAX_CELLS:
                    raise Rejection(RejectReason.TOO_LARGE, f"the XLSX has more than {MAX_CELLS} cells")
                rows.append(["" if value is None else str(value) for value in row])
            table = markdown_table(rows)
            if table:
                pages.append(f"# {sheet.title}\n\n{table}")
    except Rejection:
        raise
    except Exception as exc:  # noqa: BLE001 (a damaged sheet part)
        raise Rejection(RejectReason.CORRUPT, f"the XLSX cannot be read ({type(exc).__name__}: {exc})") from None
    finally:
        workbook.close()
    return Extracted(pages=pages)
