"""Thin command-line adapters: parse, validate, call one library function."""
