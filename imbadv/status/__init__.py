"""Where a sweep stands, read after or beside it: `python -m imbadv.status` (sweep) and what a
GPU reference chunk has left to run (chunks)."""
