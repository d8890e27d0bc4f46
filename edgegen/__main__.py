"""`python -m edgegen ...`: the edgegen command, where its script is not on PATH (a virtual
environment not activated, a CI step calling one interpreter by its path)."""

import sys

from .cli import main

if __name__ == "__main__":   # not in a process multiprocessing spawns, which imports this module again
    sys.exit(main())
