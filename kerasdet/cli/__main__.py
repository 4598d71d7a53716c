"""`python -m kerasdet.cli`."""

import sys

from kerasdet.cli import main

sys.exit(main())
