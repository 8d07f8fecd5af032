"""``python -m micronbert.cli``."""
import sys

from . import main

sys.exit(main())
