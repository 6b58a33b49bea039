"""agentrt."""
