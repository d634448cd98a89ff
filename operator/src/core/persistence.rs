//! What is stored on the objects, byte-compatible with Kopf (1.45): annotation keys, the diff-base
//! essence, diffs, and per-handler progress records.
