"""Warden for a SIEM: the store's events as OCSF, and the sinks that deliver them."""
