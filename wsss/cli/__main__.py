"""``python -m wsss.cli``: the same as the ``wsss`` command."""

from wsss.cli import main

main()
