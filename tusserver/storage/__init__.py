"""Byte storage backends and the capability protocols they implement."""
