"""`ensemble`: member statistics and event probabilities of a forecast.

Entry (run.py): summarise_forecast. sources.py decides which forecast is read and whether it must be
(re)run first; statistics.py holds the per-pixel statistics.
"""
