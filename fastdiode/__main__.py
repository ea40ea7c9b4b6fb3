"""``python -m fastdiode`` (and ``torchrun -m fastdiode``) runs the command line."""
import sys

from fastdiode.cli import main

sys.exit(main())
