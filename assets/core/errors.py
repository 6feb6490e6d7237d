"""Per-clip failures: a kind a table can group by, and a message naming the file and the reason."""

ERROR_KINDS = (
    "missing",          # no file (from the manifest)
    "unreadable",       # not the container its name says, empty, permission denied (from the manifest)
    "path_escape",      # path leaves the dataset root (from the manifest)
    "removed",          # no longer listed in the metadata (from the manifest)
    "corrupt",          # the decoder failed on the file
    "no_audio_stream",  # a container without the stream the stage needs
    "no_video_stream",
    "silent",           # decoded audio below the silence threshold everywhere
    "too_short",        # shorter than the stage's minimum, or ends before the clip's span starts
    "no_segment",       # media: full, but the row lists no segment to cut
    "odd_sample_rate",  # a rate the stage refuses (below its minimum)
    "odd_channels",     # no channels, or more than the stage accepts
    "timeout",          # the decoder did not finish within the per-clip time bound
    "worker_died",      # the worker process died on this clip (segfault, OOM kill)
    "internal_error",   # an unexpected exception: a bug rather than bad data (the stage fails if every clip hits it)
    "corrupt_cache",    # a cached frame (JPEG) that no longer decodes when the teacher embeds it
    "non_finite",       # the teacher gave NaN or inf for the clip's frames or texts
    "no_text",          # neither a caption nor a label to embed as text
)


class ClipError(Exception):
    """One clip cannot be processed; `kind` is one of ERROR_KINDS, the message names the file."""

    def __init__(self, kind: str, message: str):
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown clip error kind {kind!r}")
        super().__init__(message)
        self.kind = kind
