# Sourced by scripts/test.sh and scripts/demo.sh from the repository root: make (or reuse) .venv and activate it.
# A .venv that another python3 made (pyenv's vs the system's) cannot be updated in place: make it anew.
same_python() {
  [ "$(.venv/bin/python -c 'import sys; print(sys.base_prefix, sys.version)' 2>/dev/null)" = \
    "$(python3 -c 'import sys; print(sys.base_prefix, sys.version)')" ]
}
if [ -d .venv ] && { ! same_python || ! .venv/bin/python -m pip --version >/dev/null 2>&1; }; then rm -rf .venv; fi
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
