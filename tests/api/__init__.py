"""Tests of the REST API beside the tus protocol (``tusserver.api``)."""
