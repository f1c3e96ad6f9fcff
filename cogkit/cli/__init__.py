"""The ``cogkit`` command line. Each subcommand lives in its own module with a
``register(subparsers)`` function; ``main.py`` only assembles them."""
