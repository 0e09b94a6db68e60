"""``python -m portable_softmax``: the ``portable-softmax`` command line."""

from portable_softmax.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
