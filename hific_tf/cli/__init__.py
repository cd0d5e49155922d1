"""The `hific` command line: argument parsing (main) and what each subcommand does (commands).
Nothing in the library imports this package."""
