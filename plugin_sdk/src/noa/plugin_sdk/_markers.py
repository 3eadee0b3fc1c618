"""The pluggy markers every NOA plugin uses.

The project name ties hook specifications (in ``noa.kernel.hookspecs``) to hook
implementations (in plugins): both sides must use the same name, so it lives here.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "noa"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
