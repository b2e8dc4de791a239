"""Auth service: accounts, argon2 password hashes, RS256 access tokens the gateway verifies."""
