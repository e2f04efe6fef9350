"""`python -m edge360` runs the command line."""

from edge360.run.cli import main

raise SystemExit(main())
