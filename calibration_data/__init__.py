"""Sample data and the reference model shipped with edgepipe (see README.md here)."""
