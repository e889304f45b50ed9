"""`python -m knnsvc ...` is `python -m knnsvc.convert ...`."""

import sys

from knnsvc.convert import main

sys.exit(main())
