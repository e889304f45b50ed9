"""`python -m knnsvc.merge`: the `knnsvc-merge` command (`knnsvc.apps.merge`)."""

import sys

from knnsvc.apps.merge import main

if __name__ == "__main__":
    sys.exit(main())
