"""ifmem: the command-line interface to the ifmem daemon and its event log."""
