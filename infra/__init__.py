"""Deployment templates and their checks (not packaged: Chalice ships only app.py and chalicelib/)."""
