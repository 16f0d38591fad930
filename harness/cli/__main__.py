"""`python -m harness.cli`: what `git bisect run` calls, with the interpreter of this venv."""

import sys

from harness.cli import main

sys.exit(main())
