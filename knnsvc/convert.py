"""`python -m knnsvc.convert`: the `knnsvc-convert` command (`knnsvc.apps.convert`)."""

import sys

from knnsvc.apps.convert import main

if __name__ == "__main__":
    sys.exit(main())
