"""QGIS projects and layer styles for the COG folders of forecast, ensemble and evaluate.

Written with the standard library (XML), so no QGIS is needed to write them; they follow the
project format of QGIS 3.22 (the Debian/Ubuntu LTS release) and open in later releases.
``folder.write_folder_project`` is the one entry point the steps call.
"""
