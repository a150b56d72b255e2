"""`python -m ifmem`."""

from ifmem.entry import main

main()
