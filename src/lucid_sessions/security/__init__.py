"""Security of the API: token verification and minting, roles, rate limits, revocation."""
