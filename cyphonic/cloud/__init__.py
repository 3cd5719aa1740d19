"""The cloud services (AS + NMS) in one process: the embedded default."""
