"""Payment service: charges and refunds orders through the Wallet service, and says so in events."""
