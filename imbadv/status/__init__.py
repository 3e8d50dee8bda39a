"""What a user sees while a sweep runs: progress lines (progress), where a sweep stands
(sweep: `python -m imbadv.status`), live W&B curves (tracking)."""
