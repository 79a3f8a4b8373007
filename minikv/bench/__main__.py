import sys

from minikv.bench import main

sys.exit(main())
