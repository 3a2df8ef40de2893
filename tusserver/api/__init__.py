"""The REST API beside the tus protocol: upload flows that clients drive with JSON requests."""
