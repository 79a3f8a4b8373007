"""``python -m minikv.grade ...`` is ``minikv grade ...``."""

import sys

from minikv.grade.cli import main

raise SystemExit(main(sys.argv[1:]))
