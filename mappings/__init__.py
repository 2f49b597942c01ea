"""Mappings: a parsed message becomes canonical records, through master-data crosswalks."""
