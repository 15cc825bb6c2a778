"""The admin API's request handlers, by what they serve (the addon, ``addons/admin.py``, routes to them)."""
