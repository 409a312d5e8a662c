"""Mutation testing of the decision core (docs/testing.md, "Mutation testing"); the tool lives in
`tools/mutate/`.

    python tools/mutation.py --module middleware/_keys.py --max-mutants 40
"""

from __future__ import annotations

import sys

from mutate.cli import main

if __name__ == "__main__":
    sys.exit(main())
