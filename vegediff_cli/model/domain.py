"""Where and when the weights learned to forecast with weather: their training domain, and whether a cube lies in it.

A weights file records, per training sequence, its centre latitude, the first and last
forecast-start dates of its training windows and whether it was conditioned (meteorology or static
layers) (`training_domain`, written by `vegediff train`; scripts/add_training_domain.py adds it to
older files). A forecast is *inside* when some sequence lies within MAX_DEGREES of latitude and
MAX_DAYS of season (day of year, wrapping at the new year) of the cube's latitude and forecast
start; otherwise *outside*. A forecast with weather is checked against the conditioned sequences
(the only ones that taught the model to read weather), one without against them all. Held-out
sites outside their weights' conditioned domain got ensembles far too narrow (spread/skill
0.44-0.59, weights/MODEL_CARD.md), so a forecast outside says so.

    check = check_domain(read_domain(metadata), latitude=39.3, start=date(2021, 7, 8), conditioned=True)
    check.inside, check.describe()
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

KEY = "training_domain"
MAX_DEGREES = 3.0  # about 330 km of latitude
MAX_DAYS = 30  # six 5-day frames of season
YEAR_DAYS = 365.25
MAX_NAME = 200  # characters of a recorded sequence name (file stems)


@dataclass(frozen=True)
class DomainEntry:
    """One training sequence: its centre latitude and the dates its training windows' forecasts start."""

    name: str
    latitude: float
    first_start: dt.date
    last_start: dt.date
    conditioned: bool = True  # trained with meteorology or static layers

    def as_dict(self) -> dict:
        return {"name": self.name, "latitude": round(self.latitude, 3), "first_start": self.first_start.isoformat(),
                "last_start": self.last_start.isoformat(), "conditioned": self.conditioned}

    def season_days(self, day: dt.date) -> float:
        """Days of season between `day` and this entry's forecast starts (0 inside their range), any year."""
        span = (self.last_start - self.first_start).days
        if span >= YEAR_DAYS - 1:
            return 0.0
        offset = (_day_of_year(day) - _day_of_year(self.first_start)) % YEAR_DAYS  # days after the first start
        if offset <= span:
            return 0.0
        return float(min(offset - span, YEAR_DAYS - offset))


@dataclass(frozen=True)
class DomainCheck:
    """A cube against a training domain; `nearest` is None when the weights record no domain or no
    sequence of the kind checked."""

    inside: bool | None  # None: the weights record no training domain
    latitude: float
    start: dt.date
    conditioned: bool
    nearest: DomainEntry | None = None
    degrees: float = 0.0  # latitude difference to the nearest entry
    days: float = 0.0  # season difference to the nearest entry

    @property
    def status(self) -> str:
        return "unknown" if self.inside is None else "inside" if self.inside else "outside"

    def describe(self) -> str:
        if self.inside is None:
            return "the weights record no training domain"
        kind = "conditioned training sequence" if self.conditioned else "training sequence"
        if self.nearest is None:
            return f"the weights were trained without any {kind}"
        return (f"nearest {kind} {self.nearest.name} at {self.nearest.latitude:.1f} deg N, "
                f"forecasts starting {self.nearest.first_start:%Y-%m-%d}..{self.nearest.last_start:%Y-%m-%d}: "
                f"{self.degrees:.1f} deg of latitude and {self.days:.0f} days of season away")

    def as_dict(self) -> dict:
        return {"status": self.status, "latitude": round(self.latitude, 3), "forecast_start": self.start.isoformat(),
                "conditioned": self.conditioned,
                "nearest": None if self.nearest is None else self.nearest.as_dict(),
                "degrees": round(self.degrees, 2), "days": round(self.days, 1),
                "limits": {"degrees": MAX_DEGREES, "days": MAX_DAYS}}


def _day_of_year(day: dt.date) -> float:
    return float(day.timetuple().tm_yday - 1)


def encode_domain(entries: list[DomainEntry]) -> str:
    return json.dumps([e.as_dict() for e in entries])


def read_domain(metadata: dict[str, str]) -> list[DomainEntry] | None:
    """The entries a weights file's metadata records; None when it records none (older files).
    ValueError when the key is malformed, a name is not one printable line of at most MAX_NAME
    characters, or a latitude is not a finite number within +-90."""
    text = metadata.get(KEY)
    if text is None:
        return None
    try:
        entries = [DomainEntry(str(e["name"]), float(e["latitude"]), dt.date.fromisoformat(e["first_start"]),
                               dt.date.fromisoformat(e["last_start"]), bool(e.get("conditioned", True)))
                   for e in json.loads(text)]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{KEY} {text[:80]!r}") from exc
    for entry in entries:  # a weights file is untrusted: its names reach the one-line warning and the terminal
        if not (entry.name.isprintable() and len(entry.name) <= MAX_NAME and abs(entry.latitude) <= 90.0):
            raise ValueError(f"{KEY} {text[:80]!r}")
    return entries


def check_domain(entries: list[DomainEntry] | None, *, latitude: float, start: dt.date,
                 conditioned: bool) -> DomainCheck:
    """Whether a forecast of a cube at `latitude` starting on `start` lies inside the training domain:
    that of the conditioned sequences for a forecast with weather (`conditioned`), of all sequences otherwise."""
    if entries is None:
        return DomainCheck(None, latitude, start, conditioned)
    entries = [e for e in entries if e.conditioned or not conditioned]
    if not entries:
        return DomainCheck(False, latitude, start, conditioned)

    def reach(entry: DomainEntry) -> tuple[float, float, float]:
        degrees, days = abs(latitude - entry.latitude), entry.season_days(start)
        return max(degrees / MAX_DEGREES, days / MAX_DAYS), degrees, days

    scored = [(reach(e), e) for e in entries]
    (worst, degrees, days), nearest = min(scored, key=lambda item: item[0][0])
    return DomainCheck(worst <= 1.0, latitude, start, conditioned, nearest, degrees, days)
