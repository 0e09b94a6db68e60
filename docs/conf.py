"""Sphinx configuration for portable_softmax.

Build (offline, warnings are errors):   sphinx-build -W -b html docs docs/_build/html
Doctests of pages and docstrings:       see docs/development.md
"""

from __future__ import annotations

import os

import portable_softmax

project = "portable_softmax"
author = "portable_softmax developers"
copyright = "2025, portable_softmax developers"  # noqa: A001
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
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"**": ["sidebar-nav-bs"]}
