"""What the server and the launcher share: formats of files both write (standard library only)."""
