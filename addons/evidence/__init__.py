"""Evidence an auditor accepts: a pack for a period and filters, or one interaction, signed with the gateway's key.

A pack is a flat set of files (a folder or a zip) whose ``MANIFEST.sha256`` (``sha256sum`` format) lists every
other file and whose ``MANIFEST.sha256.sig`` is the raw Ed25519 signature of the manifest's bytes: an auditor
checks it with ``openssl pkeyutl -verify`` and ``sha256sum -c`` alone, or with ``warden evidence verify``.
The same code builds a pack on a stopped store (the CLI) and inside the running gateway (the admin API).

- ``tables``: flows, approvals and refusals, staged in DuckDB and copied to JSONL, CSV and Parquet.
- ``summary`` and ``report``: the figures of the HTML report, and the report itself (``controls``: ISO 27001).
- ``manifest``: the manifest, its signature, and the check of a pack alone (no database).
- ``pack``: a pack for a period; ``interaction``: one flow with the proof of its events.
"""
