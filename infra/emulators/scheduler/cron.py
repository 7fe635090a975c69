"""Unix-cron schedules as Cloud Scheduler reads them: five fields, evaluated in an IANA time zone.

croniter accepts more than Google does (a sixth seconds field, `@hourly`, `L`, `W`, `#`), so the grammar of
Google's "Cron job format" page is checked first and croniter only computes the times. Google's
English-like "alternative job format" ("every 5 minutes") is not emulated: it is rejected like any string
that is not unix-cron.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from functools import lru_cache

from croniter import croniter

DEFAULT_TIME_ZONE = "Etc/UTC"

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# (field name, lowest, highest, names usable instead of numbers), in the order of the five fields.
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of the month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of the week", 0, 7, _DAYS),
)
_ITEM = re.compile(r"^(?:(?P<star>\*)|(?P<low>[0-9]+|[A-Za-z]{3})(?:-(?P<high>[0-9]+|[A-Za-z]{3}))?)"
                   r"(?:/(?P<step>[0-9]+))?$")  # fmt: skip


class InvalidSchedule(ValueError):
    """A schedule or time zone Cloud Scheduler would refuse (INVALID_ARGUMENT)."""


def _value(token: str, *, field: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if token.isdigit():
        value = int(token)
    elif token.upper() in names:
        # Month names count from 1 (JAN), day names from 0 (SUN).
        value = names.index(token.upper()) + (1 if names is _MONTHS else 0)
    else:
        raise InvalidSchedule(f"invalid {field} value {token!r}")
    if not low <= value <= high:
        raise InvalidSchedule(f"{field} {value} is outside {low}-{high}")
    return value


def check_schedule(schedule: str) -> None:
    """Raise InvalidSchedule unless `schedule` is a five-field unix-cron string Google accepts."""
    fields = schedule.split()
    if len(fields) != len(_FIELDS):
        raise InvalidSchedule(f"a unix-cron schedule has five fields, got {schedule!r}")
    for text, (field, low, high, names) in zip(fields, _FIELDS, strict=True):
        for item in text.split(","):
            match = _ITEM.match(item)
            if match is None:
                raise InvalidSchedule(f"invalid {field} field {text!r} in {schedule!r}")
            if match["low"] is not None:
                first = _value(match["low"], field=field, low=low, high=high, names=names)
                if match["high"] is not None:
                    last = _value(match["high"], field=field, low=low, high=high, names=names)
                    if last < first:
                        raise InvalidSchedule(f"descending {field} range {item!r}")
            if match["step"] is not None and int(match["step"]) == 0:
                raise InvalidSchedule(f"a step of zero in {field} field {text!r}")
    if not croniter.is_valid(schedule):
        raise InvalidSchedule(f"invalid schedule {schedule!r}")


@lru_cache(maxsize=1)
def _time_zones() -> frozenset[str]:
    # The system database also lists the host's own "localtime" link and tzdata's placeholder "Factory",
    # which are not zone names Google accepts.
    return frozenset(zoneinfo.available_timezones() - {"localtime", "Factory"})


def time_zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone `name` ("" is UTC, Google's default); InvalidSchedule if the database lacks it."""
    name = name or DEFAULT_TIME_ZONE
    # Checked against the database's list, not by loading: ZoneInfo also opens paths such as "localtime".
    if name not in _time_zones():
        raise InvalidSchedule(f"invalid time zone {name!r}: not in the IANA time zone database")
    return zoneinfo.ZoneInfo(name)


def next_run(*, schedule: str, time_zone_name: str, after: dt.datetime) -> dt.datetime:
    """The first scheduled time strictly after `after`'s minute, in UTC.

    The schedule is read in the job's time zone, so "0 3 * * *" in Europe/Berlin is 03:00 Berlin time in
    winter and in summer. Granularity is one minute, as in Cloud Scheduler.
    """
    local = after.astimezone(time_zone(time_zone_name)).replace(second=0, microsecond=0)
    following: dt.datetime = croniter(schedule, local).get_next(dt.datetime)
    return following.astimezone(dt.UTC)
