"""One module per ``wsmooth`` subcommand; each defines HELP, add_arguments(parser) and run(args) -> int."""
