"""`python -m imbadv.bench`: the bench's command line (imbadv/bench/__init__.py)."""

from imbadv.bench import main

main()
