"""``python -m cure_cli ...``: the ``cure`` command (what torchrun and the training pods launch)."""

import sys

from cure_cli.main import main

sys.exit(main())
