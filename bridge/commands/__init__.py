"""CLI command groups, one module each (see bridge.cli.COMMANDS)."""
