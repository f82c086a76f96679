"""Development tools used by the tests and `make demo`: stand-ins and sample documents.

Production code never imports this package.
"""
