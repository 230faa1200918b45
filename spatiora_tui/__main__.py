"""`python -m spatiora_tui` runs the same entry point as the `spatiora` command."""

from spatiora_tui.cli import main

raise SystemExit(main())
