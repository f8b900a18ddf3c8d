"""
Storage: the transaction log (chunk files or memory), checkpoints and the stream index.
"""
