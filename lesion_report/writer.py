"""The lesion report's files: per case a JSON and a QA picture, per run two CSVs and an HTML page.

They go beside the challenge's output, never inside its interface folder, in ``<output>/lesion-report/``:

    <case>.json    summary, every lesion (lesion_report/lesions.py), the case's warnings
    <case>.png     coronal and sagittal MIPs with the lesions numbered as in the JSON
    lesions.csv    one row per lesion of every case;  cases.csv  one row per case
    index.html     one self-contained page (pictures embedded) to read a cohort in a browser

The run's files are made from the case JSONs found for all of the run's cases, so a rerun, a shard
or a torchrun rank writing them sees every finished case, not only its own.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from common.atomic import write_atomic, write_json_atomic, write_text_atomic

from .lesions import CASE_COLUMNS, LESION_COLUMNS, case_row, lesion_rows, measure_lesions

REPORT_SUBDIR = Path("lesion-report")
VOTES_SUBDIR = Path("votes")
PROBABILITY_SUBDIR = Path("probabilities")
#: Lesions listed beside the picture (all are in the JSON and the CSV).
PICTURE_LESIONS = 20
#: The run page's pictures at most this wide and high (px): drawn at the size the page shows them,
#: so that a 1200 px window needs no scroll bar and the lesion numbers keep their 8 pt.
PICTURE_PX = (1100, 560)


#: The quantities that need the PET in SUV; left empty (null) when it is not.
SUV_FIELDS = ("suv_max", "suv_mean", "suv_peak", "tlg")


def without_suv(data: dict[str, Any], reason: str) -> dict[str, Any]:
    """A report's dict with its SUV quantities emptied and the reason given: volumes, counts and Dmax
    do not need SUV, and numbers in Bq/ml must not be read as SUV."""
    data["summary"] = {k: (None if k in SUV_FIELDS else v) for k, v in data["summary"].items()}
    data["lesions"] = [{k: (None if k in SUV_FIELDS else v) for k, v in lesion.items()} for lesion in data["lesions"]]
    data["units"] = {**data["units"], "suv": f"not available: {reason}", "tlg": "not available"}
    data["suv_missing"] = reason
    return data


def write_case_report(pet: sitk.Image, mask: sitk.Image, path: Path, votes: sitk.Image | None,
                      networks: int | None, warnings: Sequence[str], suv_missing: str | None = None) -> dict[str, Any]:
    """Measure the lesions, write ``path`` (JSON) and its picture (``.png``); return the summary.

    ``suv_missing``: why the PET's values are not SUV; the SUV quantities are then left empty.
    """
    from .mip import save_mip_png

    case = path.stem
    report = measure_lesions(pet, mask, votes, networks, case=case)
    data = {**report.to_dict(), "warnings": list(warnings)}
    s = report.summary
    uptake = f"TLG {s.tlg:.0f}   SUVmax {s.suv_max:.1f}" if suv_missing is None else "SUV n/a"
    if suv_missing is not None:
        data = without_suv(data, suv_missing)
    title = f"{case}   {s.lesions} lesion(s)   TMTV {s.tmtv_ml:.1f} ml   {uptake}   Dmax {s.dmax_mm:.0f} mm"
    write_atomic(path.with_suffix(".png"),
                 lambda tmp: save_mip_png(pet, tmp, pred=mask, title=title, lesions=report.lesions[:PICTURE_LESIONS],
                                          more_lesions=max(0, len(report.lesions) - PICTURE_LESIONS),
                                          height_px=PICTURE_PX[1], max_width_px=PICTURE_PX[0]))
    write_json_atomic(data, path)
    return data["summary"]


@dataclass(frozen=True)
class CaseEntry:
    """One case of the run page: its name, its report JSON (None when there is none) and errors."""

    name: str
    report: Path | None
    errors: tuple[str, ...] = ()


def write_run_report(folder: Path, entries: Sequence[CaseEntry], title: str = "Lesion report") -> list[Path]:
    """``lesions.csv``, ``cases.csv`` and ``index.html`` in ``folder`` from the cases' JSON files."""
    reports = {e.name: json.loads(e.report.read_text()) for e in entries if e.report is not None and e.report.exists()}

    def table(header: Sequence[str], rows: list[list[Any]]) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return buffer.getvalue()

    lesions = [row for r in reports.values() for row in lesion_rows(r)]
    written = [folder / "lesions.csv", folder / "cases.csv", folder / "index.html"]
    write_text_atomic(table(LESION_COLUMNS, lesions), written[0])
    write_text_atomic(table(CASE_COLUMNS, [case_row(r) for r in reports.values()]), written[1])
    write_text_atomic(run_page(folder, entries, reports, title), written[2])
    return written


def _number(value: Any, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def run_page(folder: Path, entries: Sequence[CaseEntry], reports: dict[str, dict], title: str) -> str:
    """One HTML page, no external file: each case's picture (embedded), lesion table, warnings, errors."""
    done = sum(name in reports for name in (e.name for e in entries))
    failed = sum(bool(e.errors) for e in entries)
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}"
             "section{border-top:1px solid #ccc;padding:.6em 0}"
             "img{display:block;max-width:100%;height:auto;margin:0 0 1em 0}"
             "table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;text-align:right}"
             "th{background:#eee}tr:nth-child(even){background:#f7f7f7}.err{color:#b00}.warn{color:#a60}"
             "</style></head><body>",
             f"<h1>{html.escape(title)}</h1><p>{len(entries)} case(s): {done} with a report, {failed} failed. "
             "Lesions are 18-connected components of the mask, numbered by decreasing volume as in the picture; "
             "volumes in ml, SUV in g/ml, TLG = SUVmean &times; volume, Dmax = largest distance between two "
             "lesion centroids. Files: <a href='cases.csv'>cases.csv</a>, <a href='lesions.csv'>lesions.csv</a>."
             "</p>"]
    for entry in entries:
        parts.append(f"<section id='{html.escape(entry.name)}'><h2>{html.escape(entry.name)}</h2>")
        for error in entry.errors:
            parts.append(f"<p class='err'>error: {html.escape(error)}</p>")
        report = reports.get(entry.name)
        if report is None:
            if not entry.errors:
                parts.append("<p>no report</p>")
            parts.append("</section>")
            continue
        s = report["summary"]
        uptake = (f"TLG {s['tlg']:.1f}, SUVmax {s['suv_max']:.1f}" if s["suv_max"] is not None
                  else f"SUV not available ({html.escape(str(report.get('suv_missing', '')))})")
        parts.append(f"<p><b>{s['lesions']}</b> lesion(s), TMTV <b>{s['tmtv_ml']:.1f} ml</b>, {uptake}, "
                     f"Dmax {s['dmax_mm']:.0f} mm, largest lesion {s['largest_lesion_ml']:.1f} ml</p>")
        for warning in report.get("warnings", []):
            parts.append(f"<p class='warn'>warning: {html.escape(warning)}</p>")
        picture = folder / f"{entry.name}.png"
        if picture.exists():  # drawn at most PICTURE_PX: shown unscaled in a 1200 px window, scaled down below
            data = base64.b64encode(picture.read_bytes()).decode("ascii")
            parts.append(f"<img alt='MIP of {html.escape(entry.name)}' src='data:image/png;base64,{data}'>")
        if report["lesions"]:
            agree = report["networks"] is not None
            head = ["#", "ml", "SUVmax", "SUVmean", "SUVpeak", "TLG", "centroid x, y, z (mm)"]
            parts.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in head + (["votes"] if agree else []))
                         + "</tr>")
            for lesion in report["lesions"]:
                cells = [lesion["id"], _number(lesion["volume_ml"], 2), _number(lesion["suv_max"]),
                         _number(lesion["suv_mean"]), _number(lesion["suv_peak"]), _number(lesion["tlg"]),
                         ", ".join(f"{v:.0f}" for v in lesion["centroid_mm"])]
                if agree:
                    cells.append(f"{100 * lesion['vote_share']:.0f} %")
                parts.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
            parts.append("</table>")
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "".join(parts)
