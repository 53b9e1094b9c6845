"""llmc: archive LLM weights in one .llmc file, losslessly or with video codecs."""

__version__ = "0.1.0"
