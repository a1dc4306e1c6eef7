"""``python -m streamify``: the same CLI as the ``streamify`` script."""

from streamify.cli import main

main()
