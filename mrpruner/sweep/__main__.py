"""`python -m mrpruner.sweep`: the sweep's command line (`mrpruner.sweep.cli`), as `mrpruner-sweep`."""

from mrpruner.sweep.cli import command

command()
