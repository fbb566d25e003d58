"""``python -m precompute_assets.cli``, as the ``precompute`` command."""

from precompute_assets.cli.main import main

raise SystemExit(main())
