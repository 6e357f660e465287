"""Entry point of ``python -m sr``."""
from sr.cli import main

raise SystemExit(main())
