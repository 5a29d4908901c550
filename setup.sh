#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with every pinned dependency.
# Usage: ./setup.sh            (PYTHON=python3.11 ./setup.sh to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
.venv/bin/python -c 'import mediapipe, cv2, torch, streamlit, streamlit_webrtc; print("ferlib environment ready: mediapipe", mediapipe.__version__, "torch", torch.__version__, "streamlit", streamlit.__version__)'
