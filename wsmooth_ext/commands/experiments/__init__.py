"""The subcommands of ``wsmooth experiment``: one module per experiment, each a thin command (HELP,
add_arguments(parser), run(args) -> int) over a workflow in ``wsmooth_ext.experiments``. Modules whose name
starts with ``_`` are not subcommands."""
