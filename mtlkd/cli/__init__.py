"""Command-line interface: thin typer commands over library functions a user could call directly."""
