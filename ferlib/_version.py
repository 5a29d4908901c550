"""The one definition of ferlib's version (pyproject.toml reads it; ferlib.__version__ re-exports it)."""
__version__ = "0.9.1"
