"""``python -m fanout``: the ``fanout`` command."""

import sys

from ._cli import main

sys.exit(main())
