"""``python -m pipeline.apps.report`` = ``python run_pipeline.py report``."""

import sys

from pipeline.apps.report.cli import main

sys.exit(main())
