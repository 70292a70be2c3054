"""What the server and the launcher share: the formats of files both write (standard library only)."""
