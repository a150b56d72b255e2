"""`python -m ifmemd`: what the installed systemd unit runs."""

from ifmemd.main import main

main()
