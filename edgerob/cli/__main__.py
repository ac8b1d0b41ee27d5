"""`python -m edgerob.cli`."""

from edgerob.cli import main

main()
