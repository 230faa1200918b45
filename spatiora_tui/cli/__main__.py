"""`python -m spatiora_tui.cli`, the same entry point as `spatiora`."""

from spatiora_tui.cli import main

raise SystemExit(main())
