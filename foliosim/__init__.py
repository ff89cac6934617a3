"""foliosim: an executable model of how Linux 6.18 manages anonymous memory with large folios."""

__version__ = "0.1.0"
KERNEL_MODEL = "linux-6.18"
