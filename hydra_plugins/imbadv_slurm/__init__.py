"""imbadv's Hydra plugins: the SLURM launcher that names unfinished jobs (launcher.py)."""
