"""`python -m dlcli ...`, as torchrun runs it: torchrun --nproc-per-node=2 -m dlcli train ..."""

import sys

from dlcli.cli import main

sys.exit(main())
