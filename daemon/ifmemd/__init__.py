"""ifmemd: the ifmem daemon and the library every ifmem tool uses."""

__version__ = "0.1.0"
