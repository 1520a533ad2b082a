"""Sphinx configuration for the workerstate documentation.

Build with warnings treated as errors, as CI does::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The build needs no network: the inventories that link to the Python and joblib
documentation (intersphinx) are kept in ``docs/_intersphinx/``. The examples in
``examples/`` run during the build (sphinx-gallery) and their output appears on
their pages; the gallery's pages are written to ``docs/auto_examples/``.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

import workerstate

project = "workerstate"
author = "workerstate developers"
copyright = "workerstate developers"
release = workerstate.__version__
version = ".".join(release.split(".")[:2])

REPOSITORY = "https://github.com/workerstate/workerstate"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

root_doc = "index"
source_suffix = {".rst": "restructuredtext"}
exclude_patterns = ["_build", "snippets", "auto_examples/*.ipynb", "auto_examples/*.py"]
templates_path: list[str] = []

# -- cross-references ----------------------------------------------------------------------
# Local copies of the projects' objects.inv: the build never goes online.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", os.path.join(HERE, "_intersphinx", "python.inv")),
    "joblib": (
        "https://joblib.readthedocs.io/en/stable",
        os.path.join(HERE, "_intersphinx", "joblib.inv"),
    ),
}
intersphinx_timeout = 1

# -- autodoc and numpydoc ----------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc sections already give the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks: set[str] = set()
numpydoc_xref_param_type = False

# -- the example gallery -------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # Helper modules (_*.py) are imported by the examples, and the pytest example
    # (test_*.py) runs under pytest: neither is a page of its own.
    "filename_pattern": r"(^|/)[a-z][^/]*\.py$",
    "ignore_pattern": r"(^|/)(_|test_)[^/]*\.py$",
    "image_scrapers": (),
    "reset_modules": (),
    "download_all_examples": False,
    "show_memory": False,
    "line_numbers": False,
    "remove_config_comments": True,
    "min_reported_time": 10,
    "abort_on_example_error": True,
    "write_computation_times": False,
}

# -- HTML --------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"workerstate {release}"
html_theme_options = {
    "github_url": REPOSITORY,
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "header_links_before_dropdown": 6,
    # The API pages' examples are docstrings, wider than prose: no page TOC.
    "secondary_sidebar_items": {"*": ["page-toc"], "guide/*": ["page-toc"], "api/*": []},
    "footer_start": ["copyright"],
    "footer_end": ["theme-version"],
}
html_context = {"default_mode": "light"}
html_static_path = ["_static"]
html_css_files = ["workerstate.css"]
html_show_sourcelink = False
