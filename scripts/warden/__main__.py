"""``python -m scripts.warden``: the ``warden`` command without its console script."""

from scripts.warden.cli import main

main()
