"""Builds the one optional native piece (see earlybert/mkl_dispatch.py); everything else is in pyproject.toml."""

from setuptools import Extension, setup

# optional: without a C compiler the install goes on, and MKL keeps its default dispatch.
setup(ext_modules=[Extension("earlybert._mkl_intel_path", ["earlybert/csrc/mkl_intel_path.c"], optional=True)])
