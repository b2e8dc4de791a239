"""Inventory service: the catalogue, stock levels, and reservations made by one conditional UPDATE."""
