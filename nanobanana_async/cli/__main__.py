"""``python -m nanobanana_async.cli`` runs the ``nanobanana`` command."""

import sys

from . import main

sys.exit(main())
