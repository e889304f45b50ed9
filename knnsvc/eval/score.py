"""`python -m knnsvc.eval.score`: the `knnsvc-score` command (`knnsvc.apps.score`)."""

import sys

from knnsvc.apps.score import main

if __name__ == "__main__":
    sys.exit(main())
