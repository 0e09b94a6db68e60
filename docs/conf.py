"""Sphinx configuration for portable_softmax.

Build (offline, warnings are errors):   sphinx-build -W -b html docs docs/_build/html
Doctests of pages and docstrings:       see docs/development.md
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import time
from pathlib import Path

import portable_softmax

project = "portable_softmax"
author = "portable_softmax developers"
# The year of the build (SOURCE_DATE_EPOCH for a reproducible one), not a frozen 2025.
_YEAR = time.gmtime(int(os.environ.get("SOURCE_DATE_EPOCH") or time.time())).tm_year
copyright = f"2025–{_YEAR}, portable_softmax developers"  # noqa: A001
version = release = portable_softmax.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "matplotlib.sphinxext.plot_directive",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
templates_path = ["_templates"]  # autosummary/: API pages titled without the package prefix
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "README.md"]

# MyST: $...$ and $$...$$ math, \begin{align} environments, ::: fences.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Doctests (sphinx-build -b doctest): the {doctest} blocks of the pages and the
# ">>>" examples of every docstring pulled in by autosummary.
doctest_test_doctest_blocks = "default"
doctest_global_setup = "import numpy as np\nimport portable_softmax as ps"

# API pages: autosummary writes one page per function from its numpydoc docstring.
autosummary_generate = True
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# Intersphinx: links into NumPy, PyTorch, JAX, Dask and the Array API standard.
# Fetching the inventories needs the network, and an unreachable inventory is a
# warning, which -W turns into a failed build.  CI and offline builds therefore
# leave the mapping empty (cross-references render as plain code);
# PORTABLE_SOFTMAX_DOCS_ONLINE=1 switches the links on for a published build.
_INTERSPHINX = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "scipy": ("https://docs.scipy.org/doc/scipy/", None),
    "torch": ("https://pytorch.org/docs/stable/", None),
    "jax": ("https://docs.jax.dev/en/latest/", None),
    "dask": ("https://docs.dask.org/en/stable/", None),
    "array-api": ("https://data-apis.org/array-api/latest/", None),
}
intersphinx_mapping = _INTERSPHINX if os.environ.get("PORTABLE_SOFTMAX_DOCS_ONLINE") else {}
intersphinx_timeout = 10

# Math: MathJax 3 (TeX input, CommonHTML output) from the sphinx-mathjax-offline
# package of the docs extra, copied into _static/mathjax by the build, so that
# the pages render their formulas from disk, without the network (Sphinx's
# default loads MathJax from a CDN).  Only tex-chtml.js and the components it
# loads on demand (TeX extensions, CHTML fonts, accessibility, menu) are copied.
try:
    _MATHJAX_DIR = Path(
        importlib.metadata.distribution("sphinx-mathjax-offline").locate_file(
            "sphinx-mathjax-offline/static/mathjax"
        )
    )
except importlib.metadata.PackageNotFoundError:
    raise RuntimeError(
        "the docs render math with the MathJax of the package sphinx-mathjax-offline: "
        'pip install -e ".[docs]"'
    ) from None
_MATHJAX_SCRIPT = "tex-chtml.js"
mathjax_path = f"mathjax/{_MATHJAX_SCRIPT}"  # relative: under _static/ of the build


def _skip_mathjax_files(folder: str, names: list[str]) -> list[str]:
    """Leave out the other combined components (tex-svg.js, mml-chtml.js, ...) and
    the SVG output: the pages load none of them."""
    top = Path(folder) == _MATHJAX_DIR
    return [
        n
        for n in names
        if (top and n.endswith(".js") and n != _MATHJAX_SCRIPT)
        or (Path(folder).name == "output" and n == "svg")
    ]


def _copy_mathjax(app, exc) -> None:
    if exc is None and app.builder.format == "html":
        dest = Path(app.outdir, "_static", "mathjax")
        shutil.copytree(_MATHJAX_DIR, dest, ignore=_skip_mathjax_files, dirs_exist_ok=True)


def setup(app) -> None:
    app.connect("build-finished", _copy_mathjax)


# Figures drawn by the build (the MNIST training curve, the benchmark plot).
plot_working_directory = os.path.dirname(os.path.abspath(__file__))  # docs/
plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"figure.figsize": (6.4, 3.6), "savefig.bbox": "tight"}

html_theme = "pydata_sphinx_theme"
html_title = f"portable_softmax {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    # With hidden toctrees included the theme cannot tell that a page has no
    # section navigation, and shows an empty "Section Navigation" sidebar.
    "sidebar_includehidden": False,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
# The theme drops its section navigation from pages that have none (every page
# but the API reference) only when the template is named with its ".html"
# and sidebar_includehidden is off.
html_sidebars = {"**": ["sidebar-nav-bs.html"]}
