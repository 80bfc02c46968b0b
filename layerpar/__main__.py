"""``python -m layerpar``: the same CLI as the ``layerpar`` command."""

from layerpar.cli import main

raise SystemExit(main())
