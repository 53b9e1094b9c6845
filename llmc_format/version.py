"""The package version, in a module of its own so any layer can name it (a writer records it
in each archive) without importing the package facade, which lazily imports the top layers."""

__version__ = "0.1.0"
