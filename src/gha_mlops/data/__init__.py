"""Versioned datasets: pointers in git, contents in a content-addressed cache and in remotes."""
