"""`python -m knnsvc.stream`: the `knnsvc-stream` command (`knnsvc.apps.stream`)."""

import sys

from knnsvc.apps.stream import main

if __name__ == "__main__":
    sys.exit(main())
