"""``python -m cloudypoints_core.cli``: the same as the ``cloudypoints`` command."""

from __future__ import annotations

import sys

from cloudypoints_core.cli.main import main

sys.exit(main())
