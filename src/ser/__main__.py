"""``python -m ser``: the same as the ``ser`` command."""

from ser.cli import main

if __name__ == "__main__":
    main()
