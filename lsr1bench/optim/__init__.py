"""The L-SR1 optimizer core; imports torch and the standard library only."""
