"""Subcommands of the ``coupled-sde`` command line (see :mod:`coupled_sde.cli`)."""
