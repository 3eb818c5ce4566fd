"""`python -m ltgen`: the same as the `ltgen` command."""

from ltgen.cli import app

app(prog_name="ltgen")
