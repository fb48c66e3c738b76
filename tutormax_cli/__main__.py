"""`python -m tutormax_cli` is `tutormax`."""

from tutormax_cli.cli.entry import main

main()
