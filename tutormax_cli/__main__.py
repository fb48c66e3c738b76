"""`python -m tutormax_cli` is `tutormax`."""

from tutormax_cli.cli.app import main

main()
