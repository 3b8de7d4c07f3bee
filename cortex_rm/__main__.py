"""``python -m cortex_rm`` is the ``cortex-rm`` command."""

import sys

from cortex_rm.cli import main

sys.exit(main())
