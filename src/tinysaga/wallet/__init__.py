"""Wallet service: balances and the ledger; idempotent debit and refund by (orderId, kind)."""
