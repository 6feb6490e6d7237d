"""The code version of each per-shard cache stage: bump it when the stage's output for the same
inputs changes. Written into every cache file (`clipkt.code_version`) and part of its parameter
digest, so a bump rebuilds the stage's shards; kept apart from the stages' code so that the file
sensor can compare versions without importing the decoders (or torch).

frame_cache: 2 = frames over the clip span (media: segment | full), PyAV, seek modes and offsets.
fbank_cache / logmel_cache / waveform_cache: 2 = the clip span, AAC padding trimmed, channel: first | mix;
3 = features in a .npy beside the Parquet rows.
"""

FRAME_CACHE = "2"
AUDIO_CACHE = "3"
