"""The browser test runs only when asked for (``make test-browser`` sets MINIKV_BROWSER_TEST=1).

It needs Debian's Chromium and Playwright, and takes minutes, so a plain ``pytest`` or ``make test``
does not collect it (nothing is skipped: the file is simply not part of that run).
"""

from __future__ import annotations

import os

collect_ignore = [] if os.environ.get("MINIKV_BROWSER_TEST") == "1" else ["test_chapters_in_jupyterlab.py"]
