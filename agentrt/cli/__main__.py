"""``python -m agentrt.cli``: the ``agentrt`` command without the console script."""

import sys

from agentrt.cli import main

if __name__ == "__main__":  # importing this module (pkgutil.walk_packages does) runs nothing
    sys.exit(main())
