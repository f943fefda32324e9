"""`python -m orchestrator.cli`: the `peft-arena` command."""
from orchestrator.cli.commands import main

raise SystemExit(main())
