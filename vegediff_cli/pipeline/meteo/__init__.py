"""Meteorology in one place: daily values (sources/daily_meteo.py) onto a cube's 5-day frames (frames.py, for
`prepare`), a cube's meteorology as model inputs (inputs.py, for `forecast`) and weather for forecast dates
from Open-Meteo (weather.py)."""
