"""`python -m knnsvc.demo`: the `knnsvc-demo` command (`knnsvc.apps.demo`)."""

import sys

from knnsvc.apps.demo import main

if __name__ == "__main__":
    sys.exit(main())
