"""`python -m ncaer.cli` (as torchrun starts it)."""

from . import main

main()
