"""`python -m knnsvc ...` is `python -m knnsvc.convert ...`."""

import sys

from knnsvc.apps.convert import main

sys.exit(main())
