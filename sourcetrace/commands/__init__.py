"""The command layer: one module per command (or family), each handler taking the parsed ``argparse`` namespace
of ``cli.py`` and returning an exit code. Handlers turn options into typed calls of the library below and print
its results; the sweep's end of run (``commands/sweep.py``) is here too. Nothing below this layer sees argparse.
"""
