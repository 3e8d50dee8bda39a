"""`python -m imbadv.bench`: the bench's command line (imbadv/bench/__init__.py)."""

from imbadv.bench import main

# Guarded: the processes side spawns children that re-import this module as `__mp_main__`.
if __name__ == "__main__":
    main()
