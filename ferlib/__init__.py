"""ferlib: real-time facial emotion recognition that a person can teach to their own face.

No Streamlit import anywhere in this package: the app's pages only draw what ferlib computes.
"""
from ferlib._version import __version__

__all__ = ["__version__"]
