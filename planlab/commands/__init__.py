"""One module per `planlab` subcommand; each defines register(subparsers)."""
