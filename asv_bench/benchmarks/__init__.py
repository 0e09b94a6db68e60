"""asv benchmarks of portable_softmax; see ``common.py`` for the backend machinery."""
