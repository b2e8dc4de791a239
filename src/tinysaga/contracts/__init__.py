"""The only code services share: event schemas, names and topics (SPEC section 3)."""
