"""Trainables of the e2e tests, baked into the example image next to examples/quadratic.py."""
