"""NMS — Node Management Service."""
