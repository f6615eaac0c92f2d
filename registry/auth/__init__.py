"""Authentication and authorization of every request (README "Security")."""
