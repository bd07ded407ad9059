"""The ``cloudypoints`` command line: typed command functions under a thin argparse layer."""
