"""The hub's HTTP routes, one module per part of Replicate's API."""
