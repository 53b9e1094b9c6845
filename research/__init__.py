"""Research probes and tuning scripts (see README.md): not part of the package."""
