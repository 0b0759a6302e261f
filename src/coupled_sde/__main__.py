"""``python -m coupled_sde``: the command line (so that ``accelerate launch -m coupled_sde run ...`` works)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
