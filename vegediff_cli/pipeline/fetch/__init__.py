"""`fetch`: Sentinel-2 L2A scenes from a STAC API into one cube file on the tile's grid.

Entry (run.py): plan_fetch, fetch_cube. parts.py keeps one verified part per date, so a rerun resumes.
"""
