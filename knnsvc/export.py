"""`python -m knnsvc.export`: the `knnsvc-export` command (`knnsvc.apps.export`)."""

import sys

from knnsvc.apps.export import main

if __name__ == "__main__":
    sys.exit(main())
