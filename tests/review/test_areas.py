"""The per-class area table as CSV."""

from __future__ import annotations

import csv
import io

from wsi_seg.review.areas import ClassArea, areas_csv


def test_names_that_spreadsheets_would_run_as_formulas_are_quoted():
    rows = [ClassArea(0, "background", (255, 255, 255), 10, 0.1, None),
            ClassArea(1, "=HYPERLINK(\"http://x\")", (1, 2, 3), 5, 0.05, 50.0),
            ClassArea(2, "-1+2", (1, 2, 3), 5, 0.05, 50.0),
            ClassArea(3, "tumour, grade 2", (1, 2, 3), 0, 0.0, 0.0)]
    table = list(csv.reader(io.StringIO(areas_csv(rows))))
    assert table[0] == ["label", "class", "pixels", "area_mm2", "percent_of_tissue"]
    assert [row[1] for row in table[1:]] == ["background", "'=HYPERLINK(\"http://x\")", "'-1+2", "tumour, grade 2"]
    assert table[1][4] == "" and table[2][2:] == ["5", "0.050000", "50.0000"]
