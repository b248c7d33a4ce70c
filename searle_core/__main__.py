import sys

from searle_core.cli import main

sys.exit(main())
