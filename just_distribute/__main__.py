"""``python -m just_distribute``: the same as the ``just-distribute`` command."""

import sys

from just_distribute.cli import main

sys.exit(main())
