"""Sans-I/O logic: bytes and `now` in, bytes and decisions out. No trio, no sockets."""
