"""`python -m registry serve …`, the same as the `hroot` command."""

import sys

from registry.cli import main

sys.exit(main())
