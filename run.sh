#!/usr/bin/env bash
# Start the app on http://localhost:8501 (bound to 127.0.0.1; see .streamlit/config.toml).
set -euo pipefail
cd "$(dirname "$0")"
exec .venv/bin/python -m streamlit run app.py "$@"
