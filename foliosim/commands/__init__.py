"""Commands beyond run/diff/show, one module each with ``register(app)`` (see
:data:`foliosim.cli.COMMAND_MODULES`)."""
