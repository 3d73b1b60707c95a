"""The test suite (a regular package, so that no installed package named tests shadows it)."""

import sys

# imported before conftest.py and every test module: where PYTHONDONTWRITEBYTECODE is set (as
# in many container images), each pytest-xdist worker would otherwise compile the project's
# sources and assertion-rewrite every test module and hypothesis's modules again on every run,
# about 0.8 s per worker on 2 cores; the cache lands in __pycache__ folders git ignores
sys.dont_write_bytecode = False
