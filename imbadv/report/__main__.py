"""`python -m imbadv.report`: see imbadv.report.cli."""

import sys

from imbadv.report.cli import main

sys.exit(main())
