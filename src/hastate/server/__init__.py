"""The node's HTTP server and its API modules."""
