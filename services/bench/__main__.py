"""`python -m services.bench`: the benchmark (see `--help`)."""

import sys

from services.bench.main import main

sys.exit(main())
