"""Fuzzing of the llmc readers (see README.md); importable so tests reuse the harness."""
