"""AS — Authentication Service."""
