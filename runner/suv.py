"""SUV where the PET's own headers cannot give it: ``--suv-factors`` and BIDS-PET / dcm2niix sidecars.

The mask never needs SUV (the percentile scaling maps any linear scale to the same network input);
the lesion report's SUVmax/mean/peak and TLG do. A DICOM series gets its factor from its headers
(``runner.dicom.suv_factor``); what an anonymiser or a converter left out can be given here:

    --suv-factors "weight=72,dose=350MBq,injection=10:02:00,scan=11:04:00"   one set for every case
    --suv-factors "scale=5.1e-4"                                             a plain factor
    --suv-factors factors.csv | factors.json                                 per case (by case id)

SUVbw = stored value x weight [g] / (dose x 2^(-(scan - injection) / half-life)): the image is taken
as decay-corrected to the scan start (DICOM's DecayCorrection START). Half-life: F-18's 6586.2 s
unless ``half_life=`` says otherwise.

An image file with a ``.json`` beside it (same stem) has its SUV ingredients read from there: the
BIDS-PET fields ``InjectedRadioactivity`` + ``InjectedRadioactivityUnits``, ``InjectionStart`` and
``ImageDecayCorrectionTime`` (seconds from ``TimeZero``), ``TracerRadionuclide``, ``Units``; or
dcm2niix's ``RadionuclideTotalDose`` (Bq), ``RadionuclideHalfLife`` (s) and ``PatientWeight`` (kg).
BIDS keeps the body weight outside the sidecar (participants.tsv), so a sidecar without
``BodyWeight``/``PatientWeight`` needs ``--suv-factors weight=..`` beside it; fields given there win.
For a DICOM series the headers' remaining ingredients play the sidecar's part
(``runner.dicom.header_suv_factors``). What cannot be converted is never an error: the mask needs no
SUV, so the reason goes to the report instead.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from common.errors import InputError

#: F-18's half-life in seconds (109.77 min).
F18_HALF_LIFE_S = 6586.2
HALF_LIVES_S = {"F18": F18_HALF_LIFE_S, "C11": 1221.66, "GA68": 4062.6, "CU64": 45721.1, "ZR89": 282276.0,
                "N13": 597.9, "O15": 122.24, "RB82": 75.45}
DOSE_UNITS_BQ = {"Bq": 1.0, "kBq": 1e3, "MBq": 1e6, "GBq": 1e9, "Ci": 3.7e10, "mCi": 3.7e7, "uCi": 3.7e4, "µCi": 3.7e4}
#: Upper-case spellings (DICOM and some sidecars write them) where they are not ambiguous.
DOSE_UNITS_UPPER = {"BQ": 1.0, "KBQ": 1e3, "MBQ": 1e6, "GBQ": 1e9, "CI": 3.7e10}
#: Plausible body weights (kg): outside, grams were probably given as kilograms.
WEIGHT_KG = (1.0, 400.0)
CONCENTRATION_UNITS = {"BQ/ML": 1.0, "KBQ/ML": 1e3, "BQML": 1.0}


@dataclass(frozen=True)
class SuvFactors:
    """What SUVbw needs, or a plain ``scale``; ``origin`` says where it came from (for results.json)."""

    weight_kg: float | None = None
    dose_bq: float | None = None
    injection: float | str | None = None  # "HH:MM[:SS]", ISO date-time, or seconds on a sidecar's clock
    scan: float | str | None = None  # the decay-correction reference: the scan start
    half_life_s: float | None = None
    scale: float | None = None
    value_scale: float = 1.0  # stored value -> Bq/ml (a sidecar's kBq/ml: 1000)
    origin: str = "--suv-factors"
    #: A radionuclide named but not known here: its half-life must be given, F-18's is not assumed.
    nuclide: str | None = None
    #: Why these values cannot be made SUV whatever is added (a plain ``scale`` still can).
    unusable: str | None = None

    def factor(self) -> float:
        """Stored value -> SUVbw; InputError (the first missing or implausible ingredient) otherwise."""
        if self.scale is not None:
            if not self.scale > 0:
                raise InputError(f"{self.origin}: scale {self.scale:g} must be positive")
            return float(self.scale)
        if self.unusable is not None:
            raise InputError(f"{self.origin}: {self.unusable}")
        missing = [name for name, value in (("weight", self.weight_kg), ("dose", self.dose_bq),
                                            ("injection", self.injection), ("scan", self.scan)) if value is None]
        if missing:
            raise InputError(f"{self.origin}: no {', '.join(missing)} for the SUV")
        self.check()  # weight, dose, half-life, times: the same rules as at start-up
        if self.half_life_s is None and self.nuclide is not None:
            raise InputError(f"{self.origin}: no half-life known for radionuclide {self.nuclide!r}; give half_life")
        half_life = F18_HALF_LIFE_S if self.half_life_s is None else self.half_life_s
        elapsed = _seconds_between(self.injection, self.scan, self.origin)
        decayed = float(self.dose_bq) * math.pow(2.0, -elapsed / half_life)  # type: ignore[arg-type]
        return self.value_scale * float(self.weight_kg) * 1000.0 / decayed  # type: ignore[arg-type]

    def check(self) -> None:
        """Refuse, in one line, a value that can never work (a partial set is fine: headers or a
        sidecar may complete it)."""
        if self.scale is not None and not self.scale > 0:
            raise InputError(f"{self.origin}: scale {self.scale:g} must be positive")
        if self.weight_kg is not None and not WEIGHT_KG[0] <= self.weight_kg <= WEIGHT_KG[1]:
            raise InputError(f"{self.origin}: implausible weight {self.weight_kg:g} kg (grams given as kg?)")
        if self.dose_bq is not None and not self.dose_bq > 0:
            raise InputError(f"{self.origin}: dose {self.dose_bq:g} Bq must be positive")
        if self.half_life_s is not None and not self.half_life_s > 0:
            raise InputError(f"{self.origin}: half_life {self.half_life_s:g} s must be positive")
        for what, value in (("injection", self.injection), ("scan", self.scan)):
            if value is not None and not isinstance(value, (int, float)):
                _clock(value, self.origin, what)

    def merged(self, override: SuvFactors | None) -> SuvFactors:
        """These factors with ``override``'s given fields in their place (the user's flags over a sidecar)."""
        if override is None:
            return self
        changes = {f.name: getattr(override, f.name) for f in fields(self)
                   if f.name not in ("value_scale", "origin", "nuclide", "unusable")
                   and getattr(override, f.name) is not None}
        return replace(self, **changes, origin=f"{self.origin} + {override.origin}")


def _seconds_between(injection: float | str | None, scan: float | str | None, origin: str) -> float:
    if isinstance(injection, (int, float)) and isinstance(scan, (int, float)):
        elapsed = float(scan) - float(injection)
    else:
        start, end = _clock(injection, origin, "injection"), _clock(scan, origin, "scan")
        if isinstance(start, dt.time) and isinstance(end, dt.datetime):  # a time on the other's day
            start = dt.datetime.combine(end.date(), start, tzinfo=end.tzinfo)
        elif isinstance(end, dt.time) and isinstance(start, dt.datetime):
            end = dt.datetime.combine(start.date(), end, tzinfo=start.tzinfo)
        if isinstance(start, dt.time):
            day = dt.date(2000, 1, 1)
            start, end = dt.datetime.combine(day, start), dt.datetime.combine(day, end)  # type: ignore[arg-type]
        try:
            elapsed = (end - start).total_seconds()  # type: ignore[operator]
        except TypeError:  # one with a time zone, one without
            raise InputError(f"{origin}: give injection and scan both with or both without a time zone") from None
    if elapsed < 0:
        raise InputError(f"{origin}: injection after the scan start ({elapsed:+.0f} s; across midnight, give "
                         "ISO date-times)")
    return elapsed


def _clock(value: float | str | None, origin: str, what: str) -> dt.time | dt.datetime:
    text = str(value).strip()
    try:
        if "T" in text or "-" in text:
            return dt.datetime.fromisoformat(text)
        return dt.time.fromisoformat(text)
    except ValueError:
        raise InputError(f"{origin}: {what} {text!r} is not HH:MM[:SS] or an ISO date-time") from None


def _dose(text: str, origin: str) -> float:
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([A-Za-zµ]*)\s*", text)
    scale = _unit_scale(match.group(2) if match else "?")
    if match is None or scale is None:
        raise InputError(f"{origin}: dose {text!r}: a number with one of {', '.join(DOSE_UNITS_BQ)} (default Bq)")
    return float(match.group(1)) * scale


def _unit_scale(unit: str) -> float | None:
    """Bq per unit: the exact spelling (mBq would be milli, so MBq is not guessed from it), or an
    unambiguous upper-case one; a bare number is Bq."""
    if not unit:
        return 1.0
    return DOSE_UNITS_BQ.get(unit, DOSE_UNITS_UPPER.get(unit) if unit.isupper() else None)


def _number(text: Any, origin: str, what: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise InputError(f"{origin}: {what} {text!r} is not a number") from None


def from_fields(values: dict[str, Any], origin: str) -> SuvFactors:
    """weight, dose (with unit), injection, scan, half_life, scale: as in the spec string, JSON or CSV."""
    known = {"weight", "dose", "injection", "scan", "half_life", "scale"}
    unknown = sorted(set(values) - known - {"case"})
    if unknown:
        raise InputError(f"{origin}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    got = {k: v for k, v in values.items() if v not in (None, "")}
    return SuvFactors(
        weight_kg=_number(got["weight"], origin, "weight") if "weight" in got else None,
        dose_bq=_dose(str(got["dose"]), origin) if "dose" in got else None,
        injection=got.get("injection"), scan=got.get("scan"),
        half_life_s=_number(got["half_life"], origin, "half_life") if "half_life" in got else None,
        scale=_number(got["scale"], origin, "scale") if "scale" in got else None, origin=origin)


class SuvTable:
    """``--suv-factors``: one set for every case, or per case id from a JSON object or a CSV with ``case``."""

    def __init__(self, every: SuvFactors | None = None, per_case: dict[str, SuvFactors] | None = None) -> None:
        self.every, self.per_case = every, per_case or {}

    @classmethod
    def parse(cls, text: str) -> SuvTable:
        path = Path(text)
        if path.suffix.lower() in (".json", ".csv"):
            if not path.is_file():
                raise InputError(f"--suv-factors {path}: no such file")
            return cls(per_case=_read_table(path))
        pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
        if not pairs or any(len(p) != 2 for p in pairs):
            raise InputError(f"--suv-factors {text!r}: key=value pairs (weight, dose, injection, scan, half_life; "
                             "or scale), or a .json/.csv file")
        factors = from_fields({k.strip(): v.strip() for k, v in pairs}, "--suv-factors")
        factors.check()  # a bad value fails before any case is read; a partial set is completed per case
        if factors.injection is not None and factors.scan is not None:
            _seconds_between(factors.injection, factors.scan, factors.origin)  # injection after the scan
        return cls(every=factors)

    def for_case(self, case_id: str) -> SuvFactors | None:
        return self.per_case.get(case_id, self.every)


def _read_table(path: Path) -> dict[str, SuvFactors]:
    origin = f"--suv-factors {path}"
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
                raise InputError(f"{origin}: expected {{case id: {{weight: .., dose: .., ...}}}}")
            rows = {str(case): dict(values) for case, values in data.items()}
        else:
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                if "case" not in (reader.fieldnames or []):
                    raise InputError(f"{origin}: no 'case' column")
                rows = {str(row["case"]): {k: v for k, v in row.items() if k} for row in reader}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{origin}: cannot be read ({exc})") from None
    return {case: from_fields(values, f"{origin} (case {case})") for case, values in rows.items()}


def sidecar_of(image: Path) -> Path | None:
    """``x.nii.gz`` / ``x.nii`` / ``x.mha`` -> ``x.json`` beside it, when there is one."""
    name = image.name
    for suffix in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd"):
        if name.lower().endswith(suffix):
            candidate = image.with_name(name[: -len(suffix)] + ".json")
            return candidate if candidate.is_file() else None
    return None


def _nuclide_key(text: str) -> str:
    """"F18", "18F", "F-18", "^18^Fluorine", "68Ga", "Ga-68" -> "F18", "GA68" (letters then mass number)."""
    names = {"FLUORINE": "F", "CARBON": "C", "GALLIUM": "GA", "COPPER": "CU", "ZIRCONIUM": "ZR", "NITROGEN": "N",
             "OXYGEN": "O", "RUBIDIUM": "RB"}
    upper = str(text).upper()
    letters = "".join(re.findall(r"[A-Z]+", upper))
    return f"{names.get(letters, letters)}{''.join(re.findall(r'[0-9]+', upper))}"


def sidecar_factors(path: Path) -> SuvFactors:
    """The SUV ingredients of a BIDS-PET or dcm2niix sidecar. Never an error: the mask needs no SUV,
    so what the sidecar cannot give (unread units, an unknown tracer, no decay correction, unreadable
    JSON) becomes a reason ``factor()`` reports, and the case is segmented from its values."""
    origin = f"sidecar {path.name}"
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return SuvFactors(origin=origin, unusable=f"unreadable ({' '.join(str(exc).split())})")
    units = str(data.get("Units", "Bq/mL")).replace(" ", "").upper()
    if units in ("GML", "G/ML", "SUV", "SUVBW"):  # already SUV
        return SuvFactors(scale=1.0, origin=f"{origin} (Units {data.get('Units')}: already SUV)")
    if units not in CONCENTRATION_UNITS:
        return SuvFactors(origin=origin, unusable=f"Units {data.get('Units')!r}; only Bq/mL and kBq/mL are converted")
    if data.get("ImageDecayCorrected") is False:
        return SuvFactors(origin=origin,
                          unusable="ImageDecayCorrected false; only decay-corrected images are converted")
    dose = None
    try:
        if data.get("InjectedRadioactivity") is not None:  # BIDS-PET
            unit = str(data.get("InjectedRadioactivityUnits", "MBq")).replace(" ", "")
            scale = _unit_scale(unit)
            if scale is None:
                raise InputError(f"{origin}: InjectedRadioactivityUnits {unit!r}")
            dose = _number(data["InjectedRadioactivity"], origin, "InjectedRadioactivity") * scale
        elif data.get("RadionuclideTotalDose") is not None:  # dcm2niix: Bq
            dose = _number(data["RadionuclideTotalDose"], origin, "RadionuclideTotalDose")
        named = data.get("TracerRadionuclide")
        half_life = (_number(data["RadionuclideHalfLife"], origin, "RadionuclideHalfLife")
                     if data.get("RadionuclideHalfLife") is not None
                     else HALF_LIVES_S.get(_nuclide_key(named)) if named else None)
        weight = data.get("BodyWeight", data.get("PatientWeight"))
        injection = scan = None
        if data.get("InjectionStart") is not None:  # BIDS: seconds from TimeZero
            injection = _number(data["InjectionStart"], origin, "InjectionStart")
            reference = data.get("ImageDecayCorrectionTime", data.get("ScanStart"))
            scan = _number(reference, origin, "ImageDecayCorrectionTime") if reference is not None else None
    except InputError as exc:
        return SuvFactors(origin=origin, unusable=str(exc).removeprefix(origin + ": "))
    return SuvFactors(weight_kg=_number(weight, origin, "weight") if weight is not None else None, dose_bq=dose,
                      injection=injection, scan=scan, half_life_s=half_life, value_scale=CONCENTRATION_UNITS[units],
                      origin=origin, nuclide=named if named and half_life is None else None)
