"""``python -m hastate`` runs the CLI."""

from hastate.cli import main

main()
