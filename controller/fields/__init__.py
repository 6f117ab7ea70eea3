"""The field registry: each field of each kind declared once (read, write in place, compare, impact, live operation)."""
