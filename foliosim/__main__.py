"""``python -m foliosim``: the command line of :mod:`foliosim.cli`."""

from foliosim.cli import app

app(prog_name="foliosim")
