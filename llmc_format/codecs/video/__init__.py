"""Video codecs (VVC, HEVC, AV1, FFV1) for integer weight matrices.

``ffmpeg`` runs the encoder binary, ``frames`` maps arrays to frames, ``decode`` is the
only module importing PyAV, ``codecs`` holds the registered codec classes. Nothing is
imported here so that loading llmc does not load PyAV or look for FFmpeg.
"""
