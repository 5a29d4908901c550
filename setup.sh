#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with every pinned dependency.
# Usage: ./setup.sh            (PYTHON=python3.11 ./setup.sh to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24" "setuptools>=77"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
# ferlib itself, editable (pyproject.toml): the `ferlib` command in .venv/bin, imports from this checkout,
# shipped models from models/. --no-deps: its dependencies are exactly the pins above; resolving them again
# would bring mediapipe's declared jax and non-headless OpenCV back (README "Dependencies").
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
.venv/bin/python -c 'import mediapipe, cv2, torch, streamlit, streamlit_webrtc; import ferlib; print("ferlib", ferlib.__version__, "environment ready: mediapipe", mediapipe.__version__, "torch", torch.__version__, "streamlit", streamlit.__version__)'
.venv/bin/ferlib --version
