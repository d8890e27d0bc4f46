"""`python -m edgegen ...`: the edgegen command, where its script is not on PATH (a virtual
environment not activated, a CI step calling one interpreter by its path)."""

import sys

from .cli import main

if __name__ == "__main__":   # the command only when run as a program, never on an import of this module
    sys.exit(main())
