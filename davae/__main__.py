"""Entry point for ``python -m davae``."""

import sys

from davae.cli import main

if __name__ == "__main__":
    sys.exit(main())
