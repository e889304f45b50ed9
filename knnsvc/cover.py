"""`python -m knnsvc.cover`: the `knnsvc-cover` command (`knnsvc.apps.cover`)."""

import sys

from knnsvc.apps.cover import main

if __name__ == "__main__":
    sys.exit(main())
