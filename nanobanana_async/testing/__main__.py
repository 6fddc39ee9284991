"""``python -m nanobanana_async.testing``: serve the simulator on 127.0.0.1."""

import sys

from ._serve import serve_command

sys.exit(serve_command())
