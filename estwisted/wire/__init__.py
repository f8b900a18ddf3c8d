"""
Wire formats, pure: the TCP framing and package codec, its protobuf
messages, and the Atom/JSON codec of the HTTP API.
"""
