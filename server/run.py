"""`python3 server/run.py [options]` from anywhere: the same as `python3 -m lambda_decoder` run from server/."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lambda_decoder.__main__ import main  # noqa: E402

sys.exit(main())
