"""Warden: the gateway's addons, loaded in chain order by ``addons/gateway.py``."""
