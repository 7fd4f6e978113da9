"""`python -m services` runs the tokenbus CLI (what the installed `tokenbus` script runs)."""

from services.cli import main

main()
