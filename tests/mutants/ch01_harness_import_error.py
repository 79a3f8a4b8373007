"""Fails at import: every exercise of the file must FAIL with the import error."""

TARGET = "1.2"
EXPECT = "could not be imported"

raise RuntimeError("this file breaks at import")
