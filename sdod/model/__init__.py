"""SSD: base networks, heads, anchors, box coding, loss, post-processing."""
