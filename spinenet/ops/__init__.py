"""Pure TensorFlow functions: box coding, IoU, anchors, matching, post-processing."""
