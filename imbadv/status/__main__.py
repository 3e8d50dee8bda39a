"""`python -m imbadv.status [SWEEP]`: where a sweep stands (imbadv/status/sweep.py)."""

import sys

from imbadv.status.sweep import main

sys.exit(main())
