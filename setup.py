"""Shim for tools that still call setup.py; all metadata is in pyproject.toml."""
import setuptools

setuptools.setup()
