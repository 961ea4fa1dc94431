"""Entry point of ``python -m training`` (and of ``torchrun -m training``)."""

import sys

from .cli import main

sys.exit(main())
