"""Sphinx configuration for the workerstate documentation.

Build with warnings treated as errors, as CI does::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The build needs no network. Links to the Python and joblib documentation (intersphinx) are
enabled only when the environment variable ``WORKERSTATE_DOCS_ONLINE`` is set, since fetching
their inventories offline would fail the build.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "src")))

import workerstate

project = "workerstate"
author = "workerstate developers"
copyright = "workerstate developers"
release = workerstate.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "numpydoc",
]

if os.environ.get("WORKERSTATE_DOCS_ONLINE"):
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "joblib": ("https://joblib.readthedocs.io/en/stable", None),
    }

root_doc = "index"
source_suffix = {".rst": "restructuredtext"}
exclude_patterns = ["_build", "snippets"]
templates_path: list[str] = []

# -- autodoc and numpydoc ----------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc sections already give the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks: set[str] = set()
numpydoc_xref_param_type = False

# -- HTML --------------------------------------------------------------------------------------
html_theme = "alabaster"
html_theme_options = {
    "description": "Run-time state that follows tasks into joblib's workers.",
    "fixed_sidebar": True,
    "page_width": "1040px",
    "sidebar_width": "230px",
}
html_static_path: list[str] = []
html_show_sourcelink = False
