"""`evaluate`: scores of forecasts against observed cubes (GreenEarthNet metrics, ensemble scores).

Entry (run.py): evaluate_jobs, after plan.py's plan_jobs / tile_job. scoring.py is the library API
(score, score_cube, merge_scores) on top of windows.py (window-by-window sums, metrics/), baselines.py,
figures.py and maps.py.
"""
