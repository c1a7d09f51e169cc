"""Acquisition times of local files: from tags, from names, or declared; never guessed silently.

A name or tag with a full time (``20170613T101031``, ``2021-06-01T10:30:00Z``) gives an instant.
A date alone (``m_4709963_se_14_1_20160816``) gives the whole UTC day as ``start``/``end`` (STAC
``start_datetime``/``end_datetime``), not a made-up midnight. Text that looks like a date but is
none (``20171399``, a tag ``2021:13:45``) is reported in the returned notes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_DATE_IN_NAME = re.compile(
    r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?:[T_]?(\d{2}):?(\d{2}):?(\d{2}))?(?!\d)"
)
#: Tags that hold the acquisition time, in order of trust. ``TIFFTAG_DATETIME`` is when the file
#: was written, so it only serves when nothing else says anything (with a note).
_ACQ_TAGS = ("ACQUISITION_DATETIME", "ACQUISITION", "ACQUISITION_DATE", "DATE_ACQUIRED",
             "SENSING_TIME", "DATETIME")  # fmt: skip
_FILE_TAG = "TIFFTAG_DATETIME"


@dataclass(frozen=True)
class When:
    """An acquisition time: an instant (``start == end``) or a span such as a whole day."""

    start: datetime
    end: datetime
    source: str

    @property
    def instant(self) -> datetime | None:
        """The instant, or ``None`` for a span."""
        return self.start if self.start == self.end else None


def _day(y: int, m: int, d: int, source: str) -> When:
    start = datetime(y, m, d, tzinfo=UTC)
    return When(start, start + timedelta(days=1) - timedelta(seconds=1), source)


def time_in_name(name: str, notes: list[str]) -> When | None:
    """The first date (and time) written in ``name``; invalid dates are noted, not used."""
    for m in _DATE_IN_NAME.finditer(name):
        y, mo, d = (int(g) for g in m.groups()[:3])
        if not 1900 <= y <= 2200:
            continue  # a tile or orbit number, not a year
        try:
            if m.group(4) is None:
                return _day(y, mo, d, f"date in the name '{m.group(0)}' (time of day unknown)")
            hh, mm, ss = (int(g) for g in m.groups()[3:])
            dt = datetime(y, mo, d, hh, mm, ss, tzinfo=UTC)
        except ValueError:
            notes.append(f"'{m.group(0)}' in '{name}' looks like a date but is not one: ignored")
            continue
        return When(dt, dt, f"time in the name '{m.group(0)}'")
    return None


def parse_time_text(text: str) -> When | None:
    """An ISO 8601 / EXIF (``2021:06:01 10:30:00``) time or date; ``None`` if unparseable."""
    text = text.strip()
    if re.match(r"^\d{4}:\d{2}:\d{2}", text):
        text = text.replace(":", "-", 2)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        y, m, d = (int(v) for v in text.split("-"))
        try:
            return _day(y, m, d, text)
        except ValueError:
            return None
    try:
        dt = datetime.fromisoformat(text.replace(" ", "T").replace("Z", "+00:00"))
    except ValueError:
        return None
    dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    dt = dt.astimezone(UTC)
    return When(dt, dt, text)


def time_in_tags(tags: Mapping[str, str], what: str, notes: list[str]) -> When | None:
    """Acquisition time from GDAL metadata ``tags`` of ``what`` (a file); see ``_ACQ_TAGS``."""
    for key in _ACQ_TAGS:
        text = tags.get(key)
        if not text:
            continue
        when = parse_time_text(text)
        if when is None:
            notes.append(f"{what}: tag {key}='{text}' is not a time I can read: ignored")
            continue
        return When(when.start, when.end, f"tag {key}")
    return None


def file_written_time(tags: Mapping[str, str], what: str, notes: list[str]) -> When | None:
    """``TIFFTAG_DATETIME`` (when the file was written), used only as the last resort."""
    text = tags.get(_FILE_TAG)
    if not text:
        return None
    when = parse_time_text(text)
    if when is None:
        notes.append(f"{what}: tag {_FILE_TAG}='{text}' is not a time I can read: ignored")
        return None
    notes.append(f"{what}: no acquisition time; using {_FILE_TAG} {text} (when it was written)")
    return When(when.start, when.end, f"tag {_FILE_TAG}")


def parse_option(text: str) -> When:
    """``--datetime``: an instant, a date (the whole day) or ``start/end``.

    Raises:
        BadInputError: anything else.
    """
    from eo_fusion.errors import BadInputError

    parts = text.split("/")
    whens = [parse_time_text(p) for p in parts]
    if len(parts) > 2 or any(w is None for w in whens):
        raise BadInputError(
            f"--datetime '{text}' is not an ISO 8601 time, date or start/end range",
            fix="e.g. 2021-06-01, 2021-06-01T10:30:00Z or 2021-06-01/2021-06-30",
        )
    first, last = whens[0], whens[-1]
    assert first is not None and last is not None
    if last.end < first.start:
        raise BadInputError(f"--datetime '{text}': the end is before the start", fix="swap them")
    return When(first.start, last.end, "--datetime")


def datetime_from_name(name: str) -> datetime | None:
    """The start of the first date (and time) in a name (``2015-07-11``, ``20170613T101031``)."""
    when = time_in_name(name, [])
    return when.start if when else None
