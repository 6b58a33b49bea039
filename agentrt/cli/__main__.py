"""``python -m agentrt.cli``: the ``agentrt`` command without the console script."""

from agentrt.cli import run

if __name__ == "__main__":  # importing this module (pkgutil.walk_packages does) runs nothing
    run()
