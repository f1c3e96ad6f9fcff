__version__ = "0.1.0"

# The Cog release whose runtime protocol and schema cogkit reproduces.
COG_COMPAT_VERSION = "0.23.1"
