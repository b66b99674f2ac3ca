"""`python -m scripts.bench` (what `make bench` runs): see scripts/bench/cli.py."""

import sys

from scripts.bench.cli import main

sys.exit(main())
