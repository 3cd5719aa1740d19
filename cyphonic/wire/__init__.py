"""Wire schemas: the one place that knows bytes on the wire.

Every datagram starts with a one-byte message type (`common.MessageType`);
`parse` and `build` wrap construct so that only `ParseError` escapes.
"""
