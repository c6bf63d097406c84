"""Genre tags over music segments."""
