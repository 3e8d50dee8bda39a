"""The report: `python -m imbadv.report SWEEP` turns a sweep's results into tables, figures and findings.

No torch here: sweep.py loads, stats.py computes intervals, paper.py holds the paper's view,
document.py and figures.py write the files, cli.py is the command line."""
