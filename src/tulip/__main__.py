"""``python -m tulip <stage>`` (and ``torchrun -m tulip pretrain``) run the command-line layer."""

import sys

from tulip.cli import main

sys.exit(main())
